"""Run totals computed from the Parquet files of an output directory, and report.json.

This is what `beam-caption report` computes; report/text.py prints it and report/gallery.py
renders it as a page.

The report reads every captions-*.parquet and errors-*.parquet shard in the output as one table, so
a directory that several (resumed) runs wrote to is reported as a whole; `runs` lists each run_id.
It recomputes everything from the rows instead of trusting run-summary.json, which describes only
the run that wrote it. Accounting rules (the same as the run summary's, see docs/SCHEMA.md):

- images = caption rows + error rows; a deduplicated caption row counts as an image;
- tokens and latency are "billed" figures: deduplicated rows are left out, because the row they
  share an answer with carries the tokens and the request;
- cost_usd sums the rows that have a price; `unpriced_captions` counts billed rows without one
  (a model missing from the price table), and cost is null only when no billed row has a price;
- retries = attempts - 1 per row that made at least one request, over both tables;
- throughput uses each run's created_at span (first to last row), summed over runs so the idle
  time between a run and its resumption is not counted. It leaves out start-up time, so it is the
  steady rate, a little above what the wall clock of a local run shows.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_caption.errors import ConfigError
from beam_caption.layout import SUMMARY_NAME
from beam_caption.pipeline.outputs import read_table, unfolded_journal_rows
from beam_caption.pipeline.schema import CAPTIONS_SCHEMA, ERRORS_SCHEMA

REPORT_NAME = "report.json"
TOKEN_COLUMNS = ("prompt", "completion", "cached", "reasoning", "estimated_prompt")
QUANTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))


def load_tables(output: str) -> tuple[pa.Table, pa.Table, int]:
    """(captions, errors, journal rows) of `output` (local or any Beam filesystem): every shard
    as one table, plus the answers an interrupted run journaled and no shard holds yet (the
    third item counts those; the next --resume writes them to Parquet).

    A table with no row comes back empty; an output with none at all is a ConfigError.
    """
    try:
        captions = read_table(output, "captions")
        errors = read_table(output, "errors")
        pending = unfolded_journal_rows(output, captions, errors)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise ConfigError(f"cannot read the Parquet files in {output}: {exc}") from exc
    tables = []
    for table, rows, schema in ((captions, pending[0], CAPTIONS_SCHEMA),
                                (errors, pending[1], ERRORS_SCHEMA)):
        parts = [t for t in (table, _rows_table(rows, schema) if rows else None) if t]
        tables.append(pa.concat_tables(parts, promote_options="permissive") if parts else None)
    if tables[0] is None and tables[1] is None:
        raise ConfigError(f"no captions-*.parquet or errors-*.parquet in {output}: is it the "
                          "--output of a beam-caption run?")
    return (tables[0] if tables[0] is not None else CAPTIONS_SCHEMA.empty_table(),
            tables[1] if tables[1] is not None else ERRORS_SCHEMA.empty_table(),
            len(pending[0]) + len(pending[1]))


def _rows_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Journal rows as a table with the Parquet files' types (plus any --schema columns)."""
    names = list(dict.fromkeys(name for row in rows for name in row))
    inferred = pa.Table.from_pylist(rows).schema
    fields = [schema.field(n) if n in schema.names else inferred.field(n) for n in names]
    fields += [f for f in schema if f.name not in names]
    return pa.Table.from_pylist(rows, schema=pa.schema(fields))


def load_summary(output: str) -> dict[str, Any] | None:
    """run-summary.json of the last run written to `output`, or None if absent or unreadable."""
    path = FileSystems.join(output, SUMMARY_NAME)
    try:
        with FileSystems.open(path) as handle:
            summary = json.loads(handle.read().decode("utf-8"))
    except Exception:  # missing (a run still going, or on another runner) or damaged: optional
        return None
    return summary if isinstance(summary, dict) else None


def build_report(captions: pa.Table, errors: pa.Table, *, output: str = "",
                 summary: dict[str, Any] | None = None, top_errors: int = 10,
                 examples: int = 3, journal_rows: int = 0) -> dict[str, Any]:
    """The report document (what report.json holds) for the rows of one output directory.

    `summary` (run-summary.json) only adds the wall time of the run that wrote it, which the rows
    cannot tell; every total is computed from the rows. `journal_rows` of them came from an
    interrupted run's journal (load_tables).
    """
    billed = captions.filter(pc.invert(captions["deduplicated"]))
    cost, unpriced = _cost(billed)
    n_captions = captions.num_rows
    runs = _runs(captions, errors)
    for run in runs:
        if summary and summary.get("run_id") == run["run_id"] and summary.get("wall_seconds"):
            run["wall_seconds"] = summary["wall_seconds"]
    return {
        "output": output,
        "runs": runs,
        "models": sorted(m for m in pc.unique(captions["model"]).to_pylist() if m),
        "images": n_captions + errors.num_rows,
        "captions": n_captions,
        "errors": errors.num_rows,
        "deduplicated": n_captions - billed.num_rows,
        "journal_rows": journal_rows,
        "errors_by_code": _count_by(errors, "code"),
        "tokens": _tokens(billed),
        "cost_usd": cost,
        "unpriced_captions": unpriced,
        "cost_per_1000_images_usd": _per_thousand(cost, n_captions),
        "by_mode": {mode: _mode_totals(captions.filter(pc.equal(captions["batch"], flag)))
                    for mode, flag in (("realtime", False), ("batch", True))},
        "latency_ms": latency_stats(billed["latency_ms"]),
        "retries": _retries(captions, errors),
        "throughput": _throughput(runs),
        "top_errors": _top_errors(errors, top_errors, examples),
        **library_totals(captions, summary),
    }


def library_totals(captions: pa.Table, summary: dict[str, Any] | None) -> dict[str, Any]:
    """A phone library's totals: videos captioned, files skipped by kind (only the summary
    knows them: they have no row), and what --near-dedupe saved (requests from the rows, the
    dollars from the summary). Outputs written before these columns existed count zero."""
    names = captions.column_names
    videos = (pc.sum(pc.equal(captions["media_type"], "video")).as_py() or 0
              if "media_type" in names else 0)
    near = (pc.sum(pc.fill_null(captions["near_duplicate"], False)).as_py() or 0
            if "near_duplicate" in names else 0)
    saved = ((summary or {}).get("near_dedupe") or {}).get("usd_saved")
    return {"videos": videos, "skipped": dict((summary or {}).get("skipped") or {}),
            "near_dedupe": {"requests_saved": near, "usd_saved": saved}}


def latency_stats(latency: pa.ChunkedArray) -> dict[str, float | None]:
    """p50/p95/p99 (linear interpolation, as DuckDB's quantile_cont), mean and max, in ms."""
    values = pc.drop_null(latency)
    if len(values) == 0:
        return {"count": 0, **{name: None for name, _ in QUANTILES}, "mean": None, "max": None}
    quantiles = pc.quantile(values, q=[q for _, q in QUANTILES], interpolation="linear")
    stats: dict[str, Any] = {"count": len(values)}
    stats.update({name: round(v, 1) for (name, _), v in zip(QUANTILES, quantiles.to_pylist(),
                                                           strict=True)})
    stats["mean"] = round(pc.mean(values).as_py(), 1)
    stats["max"] = round(pc.max(values).as_py(), 1)
    return stats


def _sum(column: pa.ChunkedArray) -> int:
    return int(pc.sum(column).as_py() or 0)


def _tokens(billed: pa.Table) -> dict[str, int]:
    tokens = {name: _sum(billed[f"{name}_tokens"]) for name in TOKEN_COLUMNS}
    tokens["total"] = tokens["prompt"] + tokens["completion"]
    return tokens


def _cost(billed: pa.Table) -> tuple[float | None, int]:
    """(dollars over the priced rows or None if none is priced, number of unpriced rows)."""
    priced = pc.drop_null(billed["cost_usd"])
    unpriced = billed.num_rows - len(priced)
    if len(priced) == 0 and unpriced:
        return None, unpriced
    return round(float(pc.sum(priced).as_py() or 0.0), 8), unpriced


def _per_thousand(cost: float | None, images: int) -> float | None:
    return round(cost / images * 1000, 6) if cost is not None and images else None


def _mode_totals(rows: pa.Table) -> dict[str, Any]:
    """Totals of the realtime or the batch rows (the `batch` column)."""
    billed = rows.filter(pc.invert(rows["deduplicated"]))
    cost, _ = _cost(billed)
    return {"captions": rows.num_rows, "deduplicated": rows.num_rows - billed.num_rows,
            "prompt_tokens": _sum(billed["prompt_tokens"]),
            "completion_tokens": _sum(billed["completion_tokens"]),
            "cost_usd": cost, "cost_per_1000_images_usd": _per_thousand(cost, rows.num_rows)}


def _count_by(table: pa.Table, column: str) -> dict[str, int]:
    """{value: rows}, most frequent first (ties by value)."""
    counts = table.group_by(column).aggregate([(column, "count")]).to_pylist()
    pairs = sorted(((r[column], r[f"{column}_count"]) for r in counts), key=lambda p: (-p[1], p[0]))
    return dict(pairs)


def _retries(captions: pa.Table, errors: pa.Table) -> dict[str, int]:
    """Requests beyond the first per row (attempts 0 = no request, e.g. deduplicated or unread)."""
    def extra(table: pa.Table) -> pa.Array:
        attempts = pc.fill_null(table["attempts"].cast(pa.int64()), 0)
        return pc.max_element_wise(pc.subtract(attempts, 1), 0)

    caption_extra, error_extra = extra(captions), extra(errors)
    return {"total": _sum(caption_extra) + _sum(error_extra),
            "captions": _sum(caption_extra), "errors": _sum(error_extra),
            "images_retried": _sum(pc.greater(caption_extra, 0).cast(pa.int64()))
            + _sum(pc.greater(error_extra, 0).cast(pa.int64())),
            "attempts": _sum(captions["attempts"]) + _sum(errors["attempts"])}


def _stamps(captions: pa.Table, errors: pa.Table) -> pa.Table:
    """run_id and created_at of every row of both tables."""
    parts = [t.select(["run_id", "created_at"]) for t in (captions, errors)]
    stamps = pa.concat_tables(parts)
    return stamps.set_column(0, "run_id", pc.fill_null(stamps["run_id"], "unknown"))


def _runs(captions: pa.Table, errors: pa.Table) -> list[dict[str, Any]]:
    """One entry per run_id: its rows and first/last created_at, oldest run first."""
    grouped = _stamps(captions, errors).group_by("run_id").aggregate(
        [("created_at", "min"), ("created_at", "max"), ("created_at", "count")])
    runs = [{"run_id": r["run_id"], "rows": r["created_at_count"],
             "first_row_at": r["created_at_min"], "last_row_at": r["created_at_max"],
             "seconds": round((r["created_at_max"] - r["created_at_min"]).total_seconds(), 3)}
            for r in grouped.to_pylist()]
    runs.sort(key=lambda r: (r["first_row_at"], r["run_id"]))
    for run in runs:
        run["first_row_at"] = run["first_row_at"].isoformat()
        run["last_row_at"] = run["last_row_at"].isoformat()
    return runs


def _throughput(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows per second between each run's first and last row (n rows span n - 1 intervals), and
    per second of wall time when every run's summary recorded it (local runs)."""
    active = round(sum(run["seconds"] for run in runs), 3)
    intervals = sum(run["rows"] - 1 for run in runs)
    known_wall = bool(runs) and all("wall_seconds" in run for run in runs)
    wall = round(sum(run["wall_seconds"] for run in runs), 3) if known_wall else None
    return {"first_row_at": runs[0]["first_row_at"] if runs else None,
            "last_row_at": max(run["last_row_at"] for run in runs) if runs else None,
            "active_seconds": active,
            "images_per_second": round(intervals / active, 3) if active > 0 else None,
            "wall_seconds": wall,
            "images_per_wall_second": (round(sum(run["rows"] for run in runs) / wall, 3)
                                       if wall else None)}


def _top_errors(errors: pa.Table, limit: int, examples: int) -> list[dict[str, Any]]:
    """The most frequent (code, stage, message) triples with a few example URIs each."""
    keys = ["code", "stage", "message"]
    filled = errors.select([*keys, "uri"]).set_column(
        2, "message", pc.fill_null(errors["message"], ""))
    groups = filled.group_by(keys).aggregate([("uri", "count")]).to_pylist()
    groups.sort(key=lambda g: (-g["uri_count"], g["code"], g["message"]))
    top = []
    for group in groups[:limit]:
        mask = pc.and_(pc.and_(pc.equal(filled["code"], group["code"]),
                               pc.equal(filled["stage"], group["stage"])),
                       pc.equal(filled["message"], group["message"]))
        uris = sorted(set(filled.filter(mask)["uri"].to_pylist()))[:examples]
        top.append({"code": group["code"], "stage": group["stage"], "message": group["message"],
                    "count": group["uri_count"], "example_uris": uris})
    return top


def default_json_path(output: str) -> str:
    """Where report.json goes unless --json says otherwise: next to the data."""
    return FileSystems.join(output, REPORT_NAME)


def write_text(path: str, text: str, mime_type: str) -> None:
    """Write `text` (UTF-8) to a local path or any Beam filesystem URI (gs://, s3://)."""
    try:
        with FileSystems.create(path, mime_type=mime_type,
                                compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            handle.write(text.encode("utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot write {path}: {exc}") from exc


def write_report_json(report: dict[str, Any], path: str) -> None:
    """report.json, indented for people, through Beam FileSystems (local or gs://)."""
    write_text(path, json.dumps(report, indent=2) + "\n", "application/json")
