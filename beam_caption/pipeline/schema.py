"""The Parquet schemas of the captions and errors tables (rows.py builds their rows).

docs/SCHEMA.md documents every column; tests/integration checks that DuckDB reads the files with
no casts. Rows are plain dicts so Beam can move them between workers cheaply.
"""

from __future__ import annotations

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
    pa.field("deduplicated_from", pa.string()),
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

def captions_schema(extra: list[pa.Field] | None = None) -> pa.Schema:
    """The captions schema, plus typed answer columns from --schema."""
    if not extra:
        return CAPTIONS_SCHEMA
    clash = sorted(set(CAPTIONS_SCHEMA.names) & {f.name for f in extra})
    if clash:
        raise ConfigError(f"--schema properties {clash} collide with built-in caption columns; "
                          "rename them")
    return pa.schema(list(CAPTIONS_SCHEMA) + list(extra))
