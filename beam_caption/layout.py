"""Where things live in an output folder (local or gs://): one place for every name and path.

    OUTPUT/captions-<run_id>-SSSSS-of-NNNNN.parquet   the captions table (docs/SCHEMA.md)
    OUTPUT/errors-<run_id>-SSSSS-of-NNNNN.parquet     the errors table
    OUTPUT/run-summary.json                          the latest run's totals
    OUTPUT/report.json, report.html                  `beam-caption report`
    OUTPUT/_journal/<run_id>/*.jsonl                 answers of a run not yet in Parquet
    OUTPUT/batches.json, OUTPUT/batch/<run_id>/      batch mode's ledger and request shards
"""

from __future__ import annotations

from apache_beam.io.filesystems import FileSystems

SUMMARY_NAME = "run-summary.json"
JOURNAL_DIR = "_journal"
LEDGER_NAME = "batches.json"
BATCH_DIR = "batch"
# What a run leaves in its output (besides the journal and batch mode's files).
OUTPUT_GLOBS = ("captions-*.parquet", "errors-*.parquet", SUMMARY_NAME, "report.json",
                "report.html")


def table_glob(output: str, table: str) -> str:
    """The glob of every shard of `table` ("captions" or "errors") in `output`."""
    return FileSystems.join(output, f"{table}-*.parquet")


def journal_root(output: str) -> str:
    """OUTPUT/_journal: where every run of this output keeps its journal."""
    return FileSystems.join(output, JOURNAL_DIR)


def run_journal_dir(output: str, run_id: str) -> str:
    """OUTPUT/_journal/<run_id>: one run's journal files."""
    return FileSystems.join(journal_root(output), run_id)
