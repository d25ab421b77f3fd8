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
# A camera's clock: local wall-clock time, its UTC offset in a column of its own when known.
LOCAL_TIME = pa.timestamp("us")

# What a photo or clip says about itself (inputs/metadata.py), and what a video sent
# (inputs/video.py); all nullable, and empty for inputs that do not say.
MEDIA_FIELDS = [
    pa.field("media_type", pa.string()),  # image | video
    pa.field("taken_at", LOCAL_TIME),
    pa.field("taken_at_offset", pa.string()),  # "+01:00"
    pa.field("camera_make", pa.string()),
    pa.field("camera_model", pa.string()),
    pa.field("lens_model", pa.string()),
    pa.field("gps_latitude", pa.float64()),
    pa.field("gps_longitude", pa.float64()),
    pa.field("gps_altitude", pa.float64()),
    pa.field("duration_s", pa.float64()),
    pa.field("frame_count", pa.int64()),
    pa.field("frame_times_s", pa.list_(pa.float64())),
    pa.field("near_duplicate", pa.bool_()),
]

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
    *MEDIA_FIELDS,
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
