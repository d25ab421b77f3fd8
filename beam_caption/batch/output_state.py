"""An output directory's batch-mode state as a whole: refusing a run over open batches, and
dropping the state on --overwrite (batch/ledger.py keeps the records themselves)."""

from __future__ import annotations

from apache_beam.io.filesystems import FileSystems

from beam_caption.batch import ledger as bs
from beam_caption.batch.ledger import ledger_path
from beam_caption.errors import ConfigError
from beam_caption.layout import BATCH_DIR


def check_output(output: str, *, overwrite: bool) -> None:
    """Before a run: refuse an output with batches still open; on --overwrite drop the state.

    A run over an open batch would send its images again and pay for them twice.
    """
    ledger = bs.load_ledger(output)
    pending = ledger.open_runs()
    if pending:
        shards = sum(len(r.shards) for r in pending)
        raise ConfigError(
            f"--output {output} has a batch-mode run ({pending[0].run_id}, {shards} shard "
            f"files) that is not collected yet: run `beam-caption batch collect {output} --wait` "
            f"(or `beam-caption batch cancel {output}` first) before starting another run")
    if overwrite and ledger.runs:
        delete_state(output)


def delete_state(output: str) -> None:
    """Delete batches.json and every shard file under batch/ (for --overwrite)."""
    found = [m.path for r in FileSystems.match([FileSystems.join(output, BATCH_DIR, "**"),
                                                ledger_path(output) + "*"])
             for m in r.metadata_list]  # batches.json, its lock and any temporary left
    if found:
        FileSystems.delete(found)
