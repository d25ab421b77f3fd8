"""The one place caption rows and error rows are built, for realtime and batch mode alike.

Plain functions with no side effects (no Beam counters, no clock other than created_at): the
callers count. docs/SCHEMA.md documents every column.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from beam_caption.api.response import ChatResult
from beam_caption.inputs.metadata import PhotoMeta

# The small, stable set of stages an error row can come from.
ERROR_STAGES = ("read", "decode", "request", "response", "budget", "internal")
# Codes whose request was answered by the provider: the answer itself was refused or unusable.
_RESPONSE_CODES = frozenset({"content_filter", "bad_response", "schema_mismatch", "refusal",
                             "empty_answer"})
# The image columns every caption row copies from the prepared image (or batch metadata).
IMAGE_FIELDS = ("uri", "image_id", "source_id", "width", "height", "sent_width", "sent_height",
                "bytes", "source_key")


def utc_now() -> datetime:
    """The current time as an aware UTC datetime (what created_at holds)."""
    return datetime.now(UTC)


def error_stage(code: str) -> str:
    """The stage of a request that ended with `code`: response if it was answered, else request."""
    return "response" if code in _RESPONSE_CODES else "request"


def media_columns(image: Mapping[str, Any]) -> dict[str, Any]:
    """The media columns of a caption row (schema.MEDIA_FIELDS) from a prepared image's fields:
    its `meta` (capture time, camera, GPS) and, for a video, what was sent."""
    meta = image.get("meta") or PhotoMeta()
    return {**meta.columns(), "media_type": image.get("media_type") or "image",
            "duration_s": image.get("duration_s"), "frame_count": image.get("frame_count"),
            "frame_times_s": (list(image["frame_times_s"]) if image.get("frame_times_s")
                              else None),
            "near_duplicate": image.get("near_duplicate")}


def caption_row(image: Mapping[str, Any], *, request_key: str, result: ChatResult,
                model: str, run_id: str, cost_usd: float | None, estimated_prompt_tokens: int,
                attempts: int, latency_ms: float | None, batch: bool = False,
                deduplicated_from: str | None = None) -> dict[str, Any]:
    """One captions-table row. `image` holds IMAGE_FIELDS; `cost_usd` is the answer's real cost,
    kept on duplicates too (`deduplicated_from` names the image whose request paid, and totals
    count such rows' money once, on that image)."""
    usage = result.usage
    return {
        **{name: image.get(name) for name in IMAGE_FIELDS}, **media_columns(image),
        "caption": result.caption, "model": result.model or model,
        "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
        "cached_tokens": usage.cached_tokens, "reasoning_tokens": usage.reasoning_tokens,
        "total_tokens": usage.total_tokens,
        "estimated_prompt_tokens": estimated_prompt_tokens, "cost_usd": cost_usd,
        "batch": batch, "deduplicated": deduplicated_from is not None,
        "deduplicated_from": deduplicated_from,
        "finish_reason": result.finish_reason, "request_id": result.request_id,
        "attempts": attempts, "latency_ms": latency_ms,
        "request_key": request_key, "run_id": run_id, "created_at": utc_now(),
    }


def error_row(*, uri: str, stage: str, code: str, message: str, image_id: str | None = None,
              attempts: int = 0, request_key: str | None = None, run_id: str | None = None,
              cost_usd: float | None = None, source_key: str | None = None) -> dict[str, Any]:
    """One errors-table row; `message` is truncated so one bad file cannot bloat the table.

    `cost_usd` is set when the provider billed the answer that was then refused or rejected.
    """
    if stage not in ERROR_STAGES:
        raise ValueError(f"unknown error stage {stage!r}")
    return {"uri": uri, "image_id": image_id, "stage": stage, "code": code,
            "message": message[:2000], "attempts": attempts, "request_key": request_key,
            "source_key": source_key, "cost_usd": cost_usd, "run_id": run_id,
            "created_at": utc_now()}


def near_duplicate_row(rep: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    """A follower's row under --near-dedupe: its representative's caption and answer, its own
    image columns (`fields`: IMAGE_FIELDS, request_key, meta, media_type), no cost of its own
    (`cost_usd` 0: nothing was sent for it) and `deduplicated_from` naming the representative.
    """
    return {**rep, **{name: fields.get(name) for name in IMAGE_FIELDS}, **media_columns(fields),
            "request_key": fields["request_key"], "cost_usd": 0.0, "deduplicated": True,
            "deduplicated_from": rep["uri"], "near_duplicate": True, "attempts": 0,
            "latency_ms": None, "created_at": utc_now()}


def is_billed_error(row: Mapping[str, Any]) -> bool:
    """True for an error row whose answer the provider billed (it is never sent again)."""
    return bool(row.get("cost_usd"))
