"""run-summary.json: the run's totals, folded from its rows, and the one place it is written.

`SummaryFn` folds caption and error rows into totals inside the pipeline (so the summary exists
on every runner, Dataflow included); batch mode folds the same way over its collected files. A
local launcher then adds what only it knows (wall time, the engine's counters) with
`update_summary`. `write_summary` is the only writer of the file.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindows

from beam_caption.layout import SUMMARY_NAME


class SummaryFn(beam.CombineFn):
    """Folds ("caption", row) and ("error", row) pairs into the run's totals.

    A deduplicated row keeps its answer's real cost, but the money is counted once, on the row
    whose request paid. Rows written again from an earlier, interrupted run's journal (their
    run_id is not `run_id`) are counted in `carried_over`, and their cost in the totals: it was
    paid, and no earlier summary reported it. ("skipped", {"uri", "kind"}) pairs count the
    files a phone library holds beside its photos (inputs/library.py), by kind; ("saved",
    {"usd"}) pairs the requests --near-dedupe did not send (pipeline/near_dedupe.py).
    """

    def __init__(self, run_id: str | None = None) -> None:
        super().__init__()
        self._run_id = run_id

    def create_accumulator(self) -> dict[str, Any]:
        """An empty tally."""
        return {"captions": 0, "errors": 0, "deduplicated": 0, "carried_over": 0,
                "errors_by_code": Counter(), "skipped": Counter(),
                "near_requests_saved": 0, "near_usd_saved": 0.0,
                "prompt_tokens": 0, "completion_tokens": 0, "cached_tokens": 0,
                "reasoning_tokens": 0, "estimated_prompt_tokens": 0, "billed_prompt_tokens": 0,
                "cost_usd": 0.0, "cost_known": True, "attempts": 0, "latency_ms_sum": 0.0,
                "first": None, "last": None}

    def add_input(self, acc: dict[str, Any], element: tuple[str, dict[str, Any]]) -> dict[str, Any]:
        """Count one row."""
        kind, row = element
        if kind == "skipped":
            acc["skipped"][row["kind"]] += 1
            return acc
        if kind == "saved":  # a --near-dedupe follower: one request and its cost not spent
            acc["near_requests_saved"] += 1
            acc["near_usd_saved"] += row["usd"]
            return acc
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


class TallyBundle(beam.DoFn):
    """Rows -> one SummaryFn tally per bundle, emitted when the bundle ends.

    Each branch of rows (captions, errors, notes) is tallied where its rows are made, and only
    the tallies meet (MergeTalliesFn): the local runner materializes every Flatten of more than
    one input, so flattening the rows first sent every row through the launcher's memory (~5 KB
    per image) just to count it. A DoFn rather than a CombineGlobally per branch: it fuses into
    the stage that makes the rows and adds no stage of its own (each CombineGlobally added
    three, ~0.1 s of a local run's start).
    `kind`: "caption" or "error" for plain rows; None for rows already tagged (notes).
    """

    def __init__(self, kind: str | None, run_id: str | None = None) -> None:
        self._kind = kind
        self._fn = SummaryFn(run_id)
        self._acc: dict[str, Any] | None = None

    def start_bundle(self) -> None:
        """Nothing counted yet."""
        self._acc = None

    def process(self, row: Any) -> None:
        """Count one row."""
        acc = self._acc if self._acc is not None else self._fn.create_accumulator()
        self._acc = self._fn.add_input(acc, (self._kind, row) if self._kind else row)

    def finish_bundle(self) -> Any:
        """The bundle's tally, if it saw any row."""
        if self._acc is not None:
            acc, self._acc = self._acc, None
            yield GlobalWindows.windowed_value(acc)


class MergeTalliesFn(beam.CombineFn):
    """TallyBundle tallies -> the summary document."""

    def __init__(self) -> None:
        super().__init__()
        self._fn = SummaryFn()

    def create_accumulator(self) -> dict[str, Any]:
        """An empty tally."""
        return self._fn.create_accumulator()

    def add_input(self, acc: dict[str, Any], tally: dict[str, Any]) -> dict[str, Any]:
        """Fold in one branch's tally."""
        return self._fn.merge_accumulators([acc, tally])

    def merge_accumulators(self, accumulators: Any) -> dict[str, Any]:
        """Sum partial tallies."""
        return self._fn.merge_accumulators(accumulators)

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
        "skipped": dict(sorted(acc.get("skipped", {}).items())),
        "near_dedupe": {"requests_saved": acc.get("near_requests_saved", 0),
                        "usd_saved": round(acc.get("near_usd_saved", 0.0), 8)},
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


def summary_path(output: str) -> str:
    """Where run-summary.json lives in `output`."""
    return FileSystems.join(output, SUMMARY_NAME)


def write_summary(output: str, document: dict[str, Any]) -> str:
    """Write `document` as `output`/run-summary.json (replacing it whole); returns its path."""
    path = summary_path(output)
    with FileSystems.create(path, mime_type="application/json") as handle:
        handle.write(json.dumps(document, indent=2).encode("utf-8"))
    return path


def read_summary(output: str) -> dict[str, Any] | None:
    """`output`/run-summary.json, or None if it is missing or not a JSON object."""
    try:
        with FileSystems.open(summary_path(output)) as handle:
            document = json.loads(handle.read().decode("utf-8"))
    except Exception:  # missing (a run still going, on another runner) or damaged
        return None
    return document if isinstance(document, dict) else None


def update_summary(output: str, **fields: Any) -> dict[str, Any]:
    """Add `fields` to the summary the pipeline wrote; returns the new document."""
    document = {**(read_summary(output) or {}), **fields}
    write_summary(output, document)
    return document
