"""The Parquet schemas of the captions and errors tables (rows.py builds their rows), and the typed
columns a --schema answer adds (a JSON Schema's properties as Arrow types).

docs/SCHEMA.md documents every column; tests/integration checks that DuckDB reads the files with
no casts. Rows are plain dicts so Beam can move them between workers cheaply.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from beam_caption.api.structured import ColumnKind, StructuredSpec, column_kinds
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
    pa.field("source_key", pa.string()),
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
    pa.field("source_key", pa.string()),
    pa.field("cost_usd", pa.float64()),
    pa.field("run_id", pa.string()),
    pa.field("created_at", TIMESTAMP, nullable=False),
])

def captions_schema(spec: StructuredSpec | None = None) -> pa.Schema:
    """The captions schema, plus the typed answer columns of a --schema spec."""
    if spec is None:
        return CAPTIONS_SCHEMA
    extra = arrow_fields(spec.schema)
    clash = sorted(set(CAPTIONS_SCHEMA.names) & {f.name for f in extra})
    if clash:
        raise ConfigError(f"--schema properties {clash} collide with built-in caption columns; "
                          "rename them")
    return pa.schema(list(CAPTIONS_SCHEMA) + list(extra))


# -- typed answer columns (--schema) ----------------------------------------------------------

_SCALARS = {"string": pa.string(), "integer": pa.int64(), "number": pa.float64(),
            "boolean": pa.bool_()}


def _arrow(kind: ColumnKind) -> pa.DataType:
    if isinstance(kind, str):
        return _SCALARS[kind]
    if kind[0] == "list":
        return pa.list_(_arrow(kind[1]))
    return pa.struct([pa.field(name, _arrow(sub)) for name, sub in kind[1]])


def arrow_fields(schema: dict[str, Any]) -> list[pa.Field]:
    """The typed columns a schema adds to the captions table: one per top-level property."""
    return [pa.field(name, _arrow(kind)) for name, kind in column_kinds(schema)]
