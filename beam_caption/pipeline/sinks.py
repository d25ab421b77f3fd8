"""WriteCaptions: captions-*.parquet, errors-*.parquet, then run-summary.json, all in --output.

The summary is computed inside the pipeline (so it exists on every runner, Dataflow included) and
written only after both Parquet writes have finished. A local launcher then adds what only it knows:
wall time and the engine's counters (retries, 429s, throttled time).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from beam_caption.config import CaptionConfig
from beam_caption.pipeline.journal import delete_journals
from beam_caption.pipeline.schema import CAPTIONS_SCHEMA, ERRORS_SCHEMA, captions_schema
from beam_caption.pipeline.structured import arrow_fields

SUMMARY_NAME = "run-summary.json"
OUTPUT_GLOBS = ("captions-*.parquet", "errors-*.parquet", SUMMARY_NAME, "report.json",
                "report.html")


class SummaryFn(beam.CombineFn):
    """Folds ("caption", row) and ("error", row) pairs into the run's totals.

    A deduplicated row keeps its answer's real cost, but the money is counted once, on the row
    whose request paid. Rows written again from an earlier, interrupted run's journal (their
    run_id is not `run_id`) are counted in `carried_over`, and their cost in the totals: it was
    paid, and no earlier summary reported it.
    """

    def __init__(self, run_id: str | None = None) -> None:
        super().__init__()
        self._run_id = run_id

    def create_accumulator(self) -> dict[str, Any]:
        """An empty tally."""
        return {"captions": 0, "errors": 0, "deduplicated": 0, "carried_over": 0,
                "errors_by_code": Counter(),
                "prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0,
                "reasoning_tokens": 0, "estimated_prompt_tokens": 0, "billed_prompt_tokens": 0,
                "cost_usd": 0.0, "cost_known": True, "attempts": 0, "latency_ms_sum": 0.0,
                "first": None, "last": None}

    def add_input(self, acc: dict[str, Any], element: tuple[str, dict[str, Any]]) -> dict[str, Any]:
        """Count one row."""
        kind, row = element
        created = row["created_at"].isoformat()
        acc["first"] = min(acc["first"] or created, created)
        acc["last"] = max(acc["last"] or created, created)
        acc["attempts"] += row.get("attempts") or 0
        if self._run_id and row.get("run_id") not in (None, self._run_id):
            acc["carried_over"] += 1
        if kind == "error":
            acc["errors"] += 1
            acc["errors_by_code"][row["code"]] += 1
            acc["cost_usd"] += row.get("cost_usd") or 0.0  # billed answers that failed checks
            return acc
        acc["captions"] += 1
        if row["deduplicated"]:
            acc["deduplicated"] += 1
            return acc  # its tokens were billed once, on the row it shares an answer with
        for name in ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens"):
            acc[name] += row[name] or 0
        acc["estimated_prompt_tokens"] += row["estimated_prompt_tokens"] or 0
        acc["latency_ms_sum"] += row["latency_ms"] or 0.0
        if row["cost_usd"] is None:
            acc["cost_known"] = False
        else:
            acc["cost_usd"] += row["cost_usd"]
        return acc

    def merge_accumulators(self, accumulators: Any) -> dict[str, Any]:
        """Sum tallies from several bundles."""
        merged = self.create_accumulator()
        for acc in accumulators:
            for key, value in acc.items():
                if key in ("first", "last"):
                    if value is not None:
                        pick = min if key == "first" else max
                        merged[key] = pick(merged[key] or value, value)
                elif key == "cost_known":
                    merged[key] = merged[key] and value
                else:
                    merged[key] += value
        return merged

    def extract_output(self, acc: dict[str, Any]) -> dict[str, Any]:
        """The summary document."""
        return summary_document(acc)


def summary_document(acc: dict[str, Any]) -> dict[str, Any]:
    """Turn a SummaryFn tally into the run-summary.json shape (see docs/SCHEMA.md)."""
    images = acc["captions"] + acc["errors"]
    billed = acc["captions"] - acc["deduplicated"]
    cost = round(acc["cost_usd"], 8) if acc["cost_known"] else None
    estimated, actual = acc["estimated_prompt_tokens"], acc["prompt_tokens"]
    return {
        "images": images,
        "captions": acc["captions"],
        "errors": acc["errors"],
        "deduplicated": acc["deduplicated"],
        "carried_over": acc.get("carried_over", 0),
        "errors_by_code": dict(sorted(acc["errors_by_code"].items())),
        "tokens": {
            "prompt": acc["prompt_tokens"], "completion": acc["completion_tokens"],
            "cached": acc["cached_tokens"], "reasoning": acc["reasoning_tokens"],
            "total": acc["prompt_tokens"] + acc["completion_tokens"],
            "estimated_prompt": acc["estimated_prompt_tokens"],
        },
        "cost_usd": cost,
        "cost_per_1000_images_usd": (round(cost / acc["captions"] * 1000, 6)
                                     if cost is not None and acc["captions"] else None),
        "estimate": {
            "prompt_tokens_estimated": estimated, "prompt_tokens_actual": actual,
            "error_pct": round((estimated - actual) / actual * 100, 2) if actual else None,
        },
        "budget_exceeded": acc["errors_by_code"].get("budget_exceeded", 0),
        "attempts": acc["attempts"],
        "mean_latency_ms": round(acc["latency_ms_sum"] / billed, 1) if billed else None,
        "first_row_at": acc["first"],
        "last_row_at": acc["last"],
    }


def _write_summary(summary: dict[str, Any], output: str, run_info: dict[str, Any],
                   caption_files: list[str], error_files: list[str]) -> str:
    path = FileSystems.join(output, SUMMARY_NAME)
    document = {**run_info, **summary,
                "files": {"captions": sorted(_basename(f) for f in caption_files),
                          "errors": sorted(_basename(f) for f in error_files)}}
    with FileSystems.create(path, mime_type="application/json") as handle:
        handle.write(json.dumps(document, indent=2, sort_keys=False).encode("utf-8"))
    return path


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
    of its run is deleted once the files are written), or a run_info dict with a "run_id".
    """

    def __init__(self, output: str, config: CaptionConfig | dict[str, Any], *,
                 schema: pa.Schema | None = None, supersede: tuple[str, ...] = (),
                 journals: tuple[str, ...] = ()) -> None:
        """`supersede`: earlier error files to delete once this run's are written; `journals`:
        earlier run ids whose answer journals (journal.py) to delete then."""
        super().__init__()
        self._output = output.rstrip("/")
        if isinstance(config, CaptionConfig):
            spec = config.structured
            schema = schema or captions_schema(arrow_fields(spec.schema) if spec else None)
            if config.journal_dir:
                journals = (*journals, config.run_id)
            config = config.run_info()
        self._run_info = config
        self._schema = schema or CAPTIONS_SCHEMA
        self._supersede = supersede
        self._journals = journals

    def expand(self, pcolls: tuple[beam.PCollection, beam.PCollection]) -> beam.PCollection:
        """`(captions, errors) | WriteCaptions(...)`; returns the summary path."""
        captions, errors = pcolls
        # Shard names carry the run id, so a resumed run adds files beside the earlier ones and
        # a glob over captions-*.parquet still reads one table.
        run_id = self._run_info["run_id"]
        caption_files = captions | "WriteCaptionsParquet" >> beam.io.WriteToParquet(
            FileSystems.join(self._output, f"captions-{run_id}"), self._schema,
            codec="zstd", file_name_suffix=".parquet")
        error_files = errors | "WriteErrorsParquet" >> beam.io.WriteToParquet(
            FileSystems.join(self._output, f"errors-{run_id}"), ERRORS_SCHEMA,
            codec="zstd", file_name_suffix=".parquet")
        tagged = (
            (captions | "TagCaptions" >> beam.Map(lambda row: ("caption", row)),
             errors | "TagErrors" >> beam.Map(lambda row: ("error", row)))
            | "AllRows" >> beam.Flatten())
        summary = tagged | "Summarize" >> beam.CombineGlobally(SummaryFn(run_id))
        written = summary | "WriteSummary" >> beam.Map(
            _write_summary, self._output, self._run_info,
            beam.pvalue.AsList(caption_files), beam.pvalue.AsList(error_files))
        if not self._supersede and not self._journals:
            return written
        return written | "DropSupersededFiles" >> beam.Map(
            _delete_files, self._supersede, self._output, self._journals)
