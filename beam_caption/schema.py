"""The Parquet schemas of the captions and errors tables, and the functions that build their rows.

docs/SCHEMA.md documents every column; tests/integration checks that DuckDB reads the files with
no casts. Rows are plain dicts so Beam can move them between workers cheaply.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from beam_caption.errors import ConfigError

TIMESTAMP = pa.timestamp("us", tz="UTC")

CAPTIONS_SCHEMA = pa.schema([
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("uri", pa.string(), nullable=False),
    pa.field("source_id", pa.string()),
    pa.field("caption", pa.string()),
    pa.field("model", pa.string(), nullable=False),
    pa.field("prompt_tokens", pa.int64()),
    pa.field("completion_tokens", pa.int64()),
    pa.field("cached_tokens", pa.int64()),
    pa.field("reasoning_tokens", pa.int64()),
    pa.field("total_tokens", pa.int64()),
    pa.field("estimated_prompt_tokens", pa.int64()),
    pa.field("cost_usd", pa.float64()),
    pa.field("batch", pa.bool_(), nullable=False),
    pa.field("deduplicated", pa.bool_(), nullable=False),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("sent_width", pa.int32()),
    pa.field("sent_height", pa.int32()),
    pa.field("bytes", pa.int64()),
    pa.field("finish_reason", pa.string()),
    pa.field("request_id", pa.string()),
    pa.field("attempts", pa.int32()),
    pa.field("latency_ms", pa.float64()),
    pa.field("request_key", pa.string(), nullable=False),
    pa.field("run_id", pa.string()),
    pa.field("created_at", TIMESTAMP, nullable=False),
])

ERRORS_SCHEMA = pa.schema([
    pa.field("uri", pa.string(), nullable=False),
    pa.field("image_id", pa.string()),
    pa.field("stage", pa.string(), nullable=False),
    pa.field("code", pa.string(), nullable=False),
    pa.field("message", pa.string()),
    pa.field("attempts", pa.int32()),
    pa.field("request_key", pa.string()),
    pa.field("cost_usd", pa.float64()),
    pa.field("run_id", pa.string()),
    pa.field("created_at", TIMESTAMP, nullable=False),
])

# The small, stable set of stages an error row can come from.
ERROR_STAGES = ("read", "decode", "request", "response", "budget", "internal")


def utc_now() -> datetime:
    """The current time as an aware UTC datetime (what created_at holds)."""
    return datetime.now(UTC)


def captions_schema(extra: list[pa.Field] | None = None) -> pa.Schema:
    """The captions schema, plus typed answer columns from --schema."""
    if not extra:
        return CAPTIONS_SCHEMA
    clash = sorted(set(CAPTIONS_SCHEMA.names) & {f.name for f in extra})
    if clash:
        raise ConfigError(f"--schema properties {clash} collide with built-in caption columns; "
                          "rename them")
    return pa.schema(list(CAPTIONS_SCHEMA) + list(extra))


def error_row(*, uri: str, stage: str, code: str, message: str, image_id: str | None = None,
              attempts: int = 0, request_key: str | None = None, run_id: str | None = None,
              cost_usd: float | None = None) -> dict[str, Any]:
    """One errors-table row; `message` is truncated so one bad file cannot bloat the table."""
    if stage not in ERROR_STAGES:
        raise ValueError(f"unknown error stage {stage!r}")
    return {"uri": uri, "image_id": image_id, "stage": stage, "code": code,
            "message": message[:2000], "attempts": attempts, "request_key": request_key,
            "cost_usd": cost_usd, "run_id": run_id, "created_at": utc_now()}
