"""WriteCaptions: captions-*.parquet, errors-*.parquet, then run-summary.json, all in --output.

The summary (pipeline/summary.py) is folded from the same rows and written only after both
Parquet writes have finished; then the earlier files this run replaces, and the answer journals
whose rows are now in Parquet, are deleted.
"""

from __future__ import annotations

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
from beam_caption.pipeline.summary import SummaryFn, write_summary


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

    def expand(self, pcolls: tuple[beam.PCollection, ...]) -> beam.PCollection:
        """`(captions, errors[, notes]) | WriteCaptions(...)`; returns the summary path.

        `notes`: ("skipped", {"uri", "kind"}) for files not sent (inputs/library.py) and
        ("saved", {"usd"}) for --near-dedupe's followers, counted in the summary only."""
        captions, errors = pcolls[0], pcolls[1]
        # Shard names carry the run id, so a resumed run adds files beside the earlier ones and
        # a glob over captions-*.parquet still reads one table.
        run_id = self._run_info["run_id"]
        caption_files = captions | "WriteCaptionsParquet" >> beam.io.WriteToParquet(
            FileSystems.join(self._output, f"captions-{run_id}"), self._schema,
            codec="zstd", file_name_suffix=".parquet")
        error_files = errors | "WriteErrorsParquet" >> beam.io.WriteToParquet(
            FileSystems.join(self._output, f"errors-{run_id}"), ERRORS_SCHEMA,
            codec="zstd", file_name_suffix=".parquet")
        branches = [captions | "TagCaptions" >> beam.Map(lambda row: ("caption", row)),
                    errors | "TagErrors" >> beam.Map(lambda row: ("error", row))]
        if len(pcolls) > 2:
            branches.append(pcolls[2])
        tagged = tuple(branches) | "AllRows" >> beam.Flatten()
        summary = tagged | "Summarize" >> beam.CombineGlobally(SummaryFn(run_id))
        written = summary | "WriteSummary" >> beam.Map(
            _write_summary, self._output, self._run_info,
            beam.pvalue.AsList(caption_files), beam.pvalue.AsList(error_files))
        if not self._supersede and not self._journals:
            return written
        return written | "DropSupersededFiles" >> beam.Map(
            _delete_files, self._supersede, self._output, self._journals)
