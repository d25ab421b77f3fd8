"""The output directory as the launcher sees it: refuse to clobber, clean up, preview, read back."""

from __future__ import annotations

import contextlib
import glob
import heapq
import logging
import os
from collections.abc import Iterator
from typing import Any

import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_caption.errors import ConfigError
from beam_caption.inputs.sources import describe_io_error
from beam_caption.layout import OUTPUT_GLOBS
from beam_caption.pipeline.journal import journal_files
from beam_caption.pipeline.resume import AnswerSources

_LOG = logging.getLogger(__name__)


def existing_outputs(output: str) -> list[str]:
    """Paths of earlier captions, errors, summary and answer journal files in `output`."""
    patterns = [FileSystems.join(output, g) for g in OUTPUT_GLOBS]
    try:
        results = FileSystems.match(patterns)
    except Exception as exc:  # BeamIOError: a missing bucket, no permission, a bad scheme
        raise ConfigError(f"--output {output}: cannot list files ({describe_io_error(exc)})"
                          ) from exc
    found: list[str] = []
    for result in results:
        found.extend(meta.path for meta in result.metadata_list)
    return sorted(found + journal_files(output))


def check_output_name(output: str) -> None:
    """ConfigError for an output path with glob characters: Beam finds its temporary and final
    files by glob, so the run would pay for its answers and then fail to rename them. Checked
    before anything touches storage."""
    if any(char in output for char in "*?[]"):
        raise ConfigError(f"--output {output!r}: glob characters (* ? [ ]) cannot be part of "
                          "an output path; choose another name")


def prepare_output(output: str, *, overwrite: bool, resume: bool = False) -> tuple[str, ...]:
    """Check `output` before a run; returns the earlier error files a resumed run replaces.

    A non-empty output is refused unless `overwrite` (its files are deleted now) or `resume`
    (its captions stay; its error files are replaced once the new run has written its own, which
    carries over their billed rows; its answer journal is folded in).
    """
    check_output_name(output)
    earlier = existing_outputs(output)
    if resume or overwrite:
        _delete_stale_temp_files(output)
    if not earlier:
        return ()
    if resume:
        return tuple(p for p in earlier if _basename(p).startswith("errors-"))
    if not overwrite:
        journaled = " (answers of an interrupted run among them)" if journal_files(output) else ""
        raise ConfigError(f"--output {output} already holds {len(earlier)} output files"
                          f"{journaled}; pass --resume to caption only what is missing, or "
                          "--overwrite to replace them")
    _LOG.info("deleting %d files of an earlier run in %s", len(earlier), output)
    FileSystems.delete(earlier)
    return ()


def _delete_stale_temp_files(output: str) -> None:
    """Remove the temporary Parquet files of a run that was killed before it finalized them
    (Beam's beam-temp-* folders); their rows are in that run's answer journal."""
    try:
        found = FileSystems.match([FileSystems.join(output, "beam-temp-*", "*")])[0]
    except Exception:  # nothing to match
        return
    paths = [meta.path for meta in found.metadata_list]
    if paths:
        _LOG.info("deleting %d temporary files left by an interrupted run in %s", len(paths),
                  output)
        FileSystems.delete(paths)
    if "://" not in output:  # local folders outlive their files (object stores have none)
        for folder in glob.glob(os.path.join(output, "beam-temp-*")):
            with contextlib.suppress(OSError):
                os.rmdir(folder)


def _any(output: str, glob: str) -> bool:
    try:
        return bool(FileSystems.match([FileSystems.join(output, glob)],
                                      limits=[1])[0].metadata_list)
    except Exception:  # a folder that does not exist yet
        return False


def answer_sources(output: str) -> AnswerSources:
    """Where `output` keeps answers: captions tables, error tables, an answer journal."""
    return AnswerSources(output, captions=_any(output, "captions-*.parquet"),
                         errors=_any(output, "errors-*.parquet"),
                         journal=bool(journal_files(output)))


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def read_table(output: str, table: str) -> Any:
    """All rows of `table` ("captions" or "errors") in `output` as one pyarrow Table."""
    import pyarrow as pa

    paths = []
    for result in FileSystems.match([FileSystems.join(output, f"{table}-*.parquet")]):
        paths.extend(meta.path for meta in result.metadata_list)
    tables = []
    for path in sorted(paths):
        with FileSystems.open(path) as handle:
            tables.append(pq.read_table(handle))
    # Shards of resumed runs may differ (e.g. a column added later): unify, nulls for the gaps.
    return pa.concat_tables(tables, promote_options="default") if tables else None


def first_rows(output: str, table: str, columns: list[str], count: int,
               order_by: str = "uri") -> list[dict[str, Any]]:
    """The `count` rows of `table` with the smallest `order_by`, only `columns`, read in
    batches: memory stays flat however many rows the table holds (reading it whole to show
    eight rows took ~6 KB of launcher memory per row)."""
    best: list[dict[str, Any]] = []
    for batch in _batches(output, table, columns, required=order_by):
        best = heapq.nsmallest(count, [*best, *batch.to_pylist()],
                               key=lambda row: row[order_by] or "")
    return best


def _batches(output: str, table: str, columns: list[str], required: str | None = None
             ) -> Iterator[Any]:
    """Record batches of `columns` (those a file has) from every `table` file in `output`;
    files without the `required` column (or any of `columns`) are passed over."""
    paths = []
    for result in FileSystems.match([FileSystems.join(output, f"{table}-*.parquet")]):
        paths.extend(meta.path for meta in result.metadata_list)
    for path in sorted(paths):
        with FileSystems.open(path) as handle:
            parquet = pq.ParquetFile(handle)
            wanted = [c for c in columns if c in parquet.schema_arrow.names]
            if not wanted or (required is not None and required not in wanted):
                continue
            yield from parquet.iter_batches(batch_size=8192, columns=wanted)


def unfolded_journal_rows(output: str, captions: Any, errors: Any
                          ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(caption rows, error rows) that an interrupted run journaled and no table holds yet,
    one per (request_key, uri): the answers the next --resume folds in."""
    from beam_caption.pipeline.journal import CAPTIONS, read_journal_file

    known: set[tuple[str, str]] = set()
    for table in (captions, errors):
        if table is not None and table.num_rows:
            keys, uris = table.column("request_key").to_pylist(), table.column("uri").to_pylist()
            known.update(zip(keys, uris, strict=True))
    found: dict[str, list[dict[str, Any]]] = {"captions": [], "errors": []}
    for path in journal_files(output):
        for table, row in read_journal_file(path):
            identity = (row.get("request_key"), row.get("uri"))
            if identity not in known:
                known.add(identity)
                found["captions" if table == CAPTIONS else "errors"].append(row)
    return found["captions"], found["errors"]


def stop_message(output: str) -> str:
    """The reason an early-stopped run gave, from its error rows."""
    for batch in _batches(output, "errors", ["message"]):
        for message in batch.column("message").to_pylist():
            if message and message.startswith("not sent: "):
                return message.removeprefix("not sent: ")
    return "see errors-*.parquet"


def print_preview(output: str, summary: dict[str, Any], rows: int = 8) -> None:
    """Print the run's totals and the first captions, like a DuckDB result table."""
    cost = summary.get("cost_usd")
    per_k = summary.get("cost_per_1000_images_usd")
    print(f"\n{summary['captions']} captions, {summary['errors']} errors "
          f"({', '.join(f'{k}: {v}' for k, v in summary['errors_by_code'].items()) or 'none'}); "
          f"{summary['tokens']['prompt']} prompt + {summary['tokens']['completion']} completion "
          f"tokens; cost {'unknown' if cost is None else f'${cost:.6f}'}"
          f"{'' if per_k is None else f' (${per_k:.4f} per 1,000 images)'}; "
          f"{summary.get('images_per_second') or '?'} images/s")
    skipped = summary.get("skipped") or {}
    if skipped:
        print(f"{sum(skipped.values())} files skipped, not sent ("
              + ", ".join(f"{k}: {v}" for k, v in skipped.items()) + ")")
    near = summary.get("near_dedupe") or {}
    if near.get("requests_saved"):
        print(f"--near-dedupe: {near['requests_saved']} requests saved "
              f"(${near.get('usd_saved') or 0:.6f})")
    shown = [("uri", 28), ("caption", 70), ("prompt_tokens", 13), ("completion_tokens", 17),
             ("cost_usd", 10)]
    first = first_rows(output, "captions", [name for name, _ in shown], rows)
    if not first:
        return
    lines = [" | ".join(name.ljust(width) for name, width in shown)]
    lines.append("-+-".join("-" * width for _, width in shown))
    for row in first:
        cells = []
        for name, width in shown:
            value = row.get(name)
            if name == "uri":
                value = str(value).rsplit("/", 1)[-1]
            elif name == "cost_usd" and value is not None:
                value = f"{value:.7f}"
            text = "" if value is None else str(value)
            cells.append((text[: width - 1] + "…" if len(text) > width else text).ljust(width))
        lines.append(" | ".join(cells))
    print("\n".join(lines))
    print(f"\nfiles in {output}: captions-*.parquet, errors-*.parquet, run-summary.json")
