"""Manifest files: the list of images a --manifest names, streamed row by row.

Formats by extension: .txt (one URI per line, blank lines and #-comments skipped), and .csv,
.jsonl or .parquet with a `uri` column and optional `id` and prompt columns. Files are read
through Beam FileSystems (local paths, gs://, s3://) and never whole, so a manifest of millions
of rows streams on a worker. Relative paths resolve against the manifest's directory.
inputs/sources.py turns the entries into ImageRefs.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterator
from typing import NamedTuple

import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_caption.errors import ConfigError

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_MANIFEST_FORMATS = (".txt", ".csv", ".jsonl", ".parquet")
_PARQUET_BATCH_ROWS = 4096
_rows_without_uri = Metrics.counter("beam_caption", "manifest_rows_without_uri")

# One row as a format reader sees it: uri, id, prompt (any may be missing).
Row = tuple[str | None, str | None, str | None]


class ManifestEntry(NamedTuple):
    """One manifest row: an absolute URI, the caller's id and the per-row prompt (or None)."""

    uri: str
    source_id: str | None
    prompt: str | None


def manifest_format(path: str) -> str:
    """The manifest's format from its extension (.txt, .csv, .jsonl, .parquet)."""
    extension = os.path.splitext(path)[1].lower()
    if extension not in _MANIFEST_FORMATS:
        raise ConfigError(
            f"manifest {path!r} has an unknown extension; use one of {', '.join(_MANIFEST_FORMATS)}"
        )
    return extension


def read_manifest(path: str, prompt_column: str = "prompt") -> Iterator[ManifestEntry]:
    """Stream the entries a manifest lists; relative paths resolve against its directory.

    `prompt_column` names the column (or JSON key) holding a per-row prompt, if any.

    Rows with an empty uri are skipped (counted in the manifest_rows_without_uri metric).
    """
    readers = {".txt": _txt_rows, ".csv": _csv_rows, ".jsonl": _jsonl_rows, ".parquet": _pq_rows}
    base = FileSystems.split(path)[0]
    for uri, source_id, prompt in readers[manifest_format(path)](path, prompt_column):
        uri = (uri or "").strip()
        if not uri:
            _rows_without_uri.inc()
            continue
        yield ManifestEntry(_resolve(uri, base), source_id or None, prompt or None)


def _open_text(path: str) -> io.TextIOWrapper:
    """A manifest as text; utf-8-sig drops the byte-order mark spreadsheet exports add."""
    raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    return io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")


def _txt_rows(path: str, prompt_column: str) -> Iterator[Row]:
    """One URI per line; blank lines and #-comments skipped."""
    with _open_text(path) as lines:
        for line in lines:
            uri = line.strip()
            if uri and not uri.startswith("#"):
                yield uri, None, None


def _csv_rows(path: str, prompt_column: str) -> Iterator[Row]:
    """A CSV with a header row containing `uri` (and optionally `id`, `prompt`)."""
    with _open_text(path) as text:
        reader = csv.DictReader(text)
        if "uri" not in (reader.fieldnames or []):
            raise ConfigError(f"manifest {path!r} has no 'uri' column in its header")
        for row in reader:
            yield row.get("uri"), _text(row.get("id")), row.get(prompt_column)


def _jsonl_rows(path: str, prompt_column: str) -> Iterator[Row]:
    """One JSON object per line with a `uri` key (and optionally `id`, `prompt`)."""
    with _open_text(path) as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise ConfigError(f"manifest {path!r} line {number} is not valid JSON") from exc
            if not isinstance(row, dict) or "uri" not in row:
                raise ConfigError(f"manifest {path!r} line {number} has no 'uri' key")
            yield _text(row.get("uri")), _text(row.get("id")), _text(row.get(prompt_column))


def _pq_rows(path: str, prompt_column: str) -> Iterator[Row]:
    """A Parquet file with a `uri` column, read in record batches (never whole)."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        parquet = pq.ParquetFile(handle)
        names = parquet.schema_arrow.names
        if "uri" not in names:
            raise ConfigError(f"manifest {path!r} has no 'uri' column")
        columns = [name for name in ("uri", "id", prompt_column) if name in names]
        for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=columns):
            for row in batch.to_pylist():
                yield _text(row.get("uri")), _text(row.get("id")), _text(row.get(prompt_column))


def _text(value: object) -> str | None:
    """A manifest cell as text (ids may be numbers); None stays None."""
    return None if value is None else str(value)


def _resolve(uri: str, base: str) -> str:
    """A manifest entry as an absolute URI: relative paths are relative to the manifest."""
    if _SCHEME.match(uri) or os.path.isabs(uri):
        return uri
    if _SCHEME.match(base):
        return FileSystems.join(base, uri)
    return os.path.normpath(os.path.join(base, uri))
