"""WriteCaptions: captions-*.parquet, errors-*.parquet, then run-summary.json, all in --output.

The summary (pipeline/summary.py) is folded from the same rows and written only after both
Parquet writes have finished; then the earlier files this run replaces, and the answer journals
whose rows are now in Parquet, are deleted.
"""

from __future__ import annotations

import logging
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from beam_caption.config import CaptionConfig, RunInfo
from beam_caption.pipeline.journal import delete_journals
from beam_caption.pipeline.schema import (
    CAPTIONS_SCHEMA,
    ERRORS_SCHEMA,
    captions_schema,
)
from beam_caption.pipeline.summary import MergeTalliesFn, TallyBundle, write_summary

# Record batches Beam's Parquet sink holds per file before it writes them as a row group.
ROW_GROUP_BYTES = 8 * 1024 * 1024
_EMPTY_SINK_WARNING = "No shards found to finalize"


class _EmptyBranchIsExpected(logging.Filter):
    """Drops Beam's warning for a sink that wrote no file: a second branch of rows with no rows
    (usually the errors found before any request) writes nothing on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for that one message."""
        return not record.getMessage().startswith(_EMPTY_SINK_WARNING)


# In every process that imports the sinks (launcher and workers), where Beam would log it.
logging.getLogger("apache_beam.io.filebasedsink").addFilter(_EmptyBranchIsExpected())


def _write_summary(summary: dict[str, Any], output: str, run_info: dict[str, Any],
                   caption_files: list[str], error_files: list[str]) -> str:
    return write_summary(output, {**run_info, **summary, "files": {
        "captions": sorted(_basename(f) for f in caption_files),
        "errors": sorted(_basename(f) for f in error_files)}})


def _delete_files(summary_path: str, paths: tuple[str, ...], output: str,
                  journals: tuple[str, ...]) -> str:
    """After the tables and the summary are written: delete the earlier error files this run's
    errors table replaces, and the answer journals whose rows are now in Parquet."""
    existing = [p for p in paths if FileSystems.exists(p)]
    if existing:
        FileSystems.delete(existing)
    if journals:
        delete_journals(output, journals)
    return summary_path


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


class WriteCaptions(beam.PTransform):
    """Writes caption rows and error rows as zstd Parquet, then the run summary.

    `(captions, errors) | WriteCaptions(output, config)`: `config` is the CaptionConfig the rows
    came from (its run id names the files; its --schema adds typed columns; the answer journal
    of its run is deleted once the files are written), or just the run's RunInfo.
    """

    def __init__(self, output: str, config: CaptionConfig | RunInfo, *,
                 schema: pa.Schema | None = None, supersede: tuple[str, ...] = (),
                 journals: tuple[str, ...] = ()) -> None:
        """`supersede`: earlier error files to delete once this run's are written; `journals`:
        earlier run ids whose answer journals (journal.py) to delete then."""
        super().__init__()
        self._output = output.rstrip("/")
        if isinstance(config, CaptionConfig):
            spec = config.structured
            schema = schema or captions_schema(spec)
            if config.journal_dir:
                journals = (*journals, config.run_id)
            config = config.run_info()
        self._run_info = config.as_dict()
        self._schema = schema or CAPTIONS_SCHEMA
        self._supersede = supersede
        self._journals = journals

    def expand(self, pcolls: tuple[Any, ...]) -> beam.PCollection:
        """`(captions, errors[, notes]) | WriteCaptions(...)`; returns the summary path.

        Each of the three may be one PCollection or a tuple of them (branches: e.g. the captions
        CaptionImages made and those --near-dedupe shared). Branches are written and tallied
        each where its rows are, never flattened first: the local runner materializes every
        Flatten of more than one input, which sent every row through the launcher's memory.
        `notes`: ("skipped", {"uri", "kind"}) for files not sent (inputs/library.py) and
        ("saved", {"usd"}) for --near-dedupe's followers, counted in the summary only."""
        captions, errors = _branches(pcolls[0]), _branches(pcolls[1])
        notes = _branches(pcolls[2]) if len(pcolls) > 2 else ()
        # Shard names carry the run id, so a resumed run adds files beside the earlier ones and
        # a glob over captions-*.parquet still reads one table.
        caption_files = self._write(captions, "captions", self._schema)
        error_files = self._write(errors, "errors", ERRORS_SCHEMA)
        tallies = [branch | f"Tally{kind.title()}s{_nth(i)}" >> beam.ParDo(
                       TallyBundle(kind, self._run_id))
                   for kind, branches in (("caption", captions), ("error", errors))
                   for i, branch in enumerate(branches)]
        tallies += [branch | f"TallyNotes{_nth(i)}" >> beam.ParDo(TallyBundle(None, self._run_id))
                    for i, branch in enumerate(notes)]
        summary = (tuple(tallies) | "AllTallies" >> beam.Flatten()
                   | "Summarize" >> beam.CombineGlobally(MergeTalliesFn()))
        written = summary | "WriteSummary" >> beam.Map(
            _write_summary, self._output, self._run_info,
            beam.pvalue.AsList(caption_files), beam.pvalue.AsList(error_files))
        if not self._supersede and not self._journals:
            return written
        return written | "DropSupersededFiles" >> beam.Map(
            _delete_files, self._supersede, self._output, self._journals)

    @property
    def _run_id(self) -> str:
        return self._run_info["run_id"]

    def _write(self, branches: tuple[beam.PCollection, ...], table: str,
               schema: pa.Schema) -> beam.PCollection:
        """Write branch n as `table`-[part<n>-]<run id>-*.parquet; the written paths.

        The branch goes before the run id: Beam deletes whatever matches a sink's own
        "<prefix>-*-of-<shards>" before it finalizes, so a prefix that extended another
        (`captions-<run>-2`) lost its files to the first branch's clean-up."""
        written = []
        for i, branch in enumerate(branches):
            write = beam.io.WriteToParquet(
                FileSystems.join(self._output, f"{table}-{_nth(i, 'part')}{self._run_id}"),
                schema, codec="zstd", file_name_suffix=".parquet",
                # Beam buffers 64 MB of record batches per file before it writes a row group:
                # ~120,000 rows held per worker process. 8 MB (~15,000 rows) keeps a long run's
                # workers flat and is still a large row group for DuckDB or BigQuery.
                row_group_buffer_size=ROW_GROUP_BYTES)
            if i:
                # The first branch makes an empty file when there are no rows at all (the
                # table's schema is then still there to read); the others make none.
                write._sink.skip_if_empty = True  # WriteToParquet exposes no flag for it
            written.append(branch | f"Write{table.title()}Parquet{_nth(i)}" >> write)
        if len(written) == 1:
            return written[0]
        return tuple(written) | f"All{table.title()}Files" >> beam.Flatten()


def _branches(pcolls: Any) -> tuple[beam.PCollection, ...]:
    """One PCollection or several, as a tuple."""
    return tuple(pcolls) if isinstance(pcolls, (tuple, list)) else (pcolls,)


def _nth(i: int, word: str = "") -> str:
    """'' for the first branch (its names are the historic ones), then '2', '3', ... (with
    `word`: 'part2-', 'part3-', ...)."""
    if i == 0:
        return ""
    return f"{word}{i + 1}-" if word else str(i + 1)
