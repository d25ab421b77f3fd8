"""Manifests: files that list the images to caption, read with Beam's splittable reads.

Formats by extension: .txt (one URI per line; blank lines and #-comments skipped); .csv, .jsonl or
.parquet with a `uri` column (optional `id` and a prompt column); and Google Cloud Storage
inventory reports (.csv or .parquet with `bucket` and `name` columns, optional `size` and
`updated`), whose rows become gs://bucket/name refs carrying the listing's size and time, so
--resume skips an unchanged object without reading it. `--manifest` may be a glob, such as the
shards of an inventory report; every file must have the first file's columns.

On a runner the files are read with ReadAllFromText and ReadAllFromParquet, which cut a file into
byte ranges (text) or row groups (Parquet) and spread them over workers: a manifest of 50 million
rows is not read by one worker. The launcher (inspect_manifest) reads only the first file's header
or schema; count_inputs and the launcher's check read local files with the same row parsers.

A row that names no image (malformed JSON, a CSV row with the wrong number of fields, an empty
uri, bytes that are not UTF-8) becomes an ImageRef with `problem` set, which PrepareImages turns
into an error row: never a crash, never a silent drop. Relative paths resolve against the
directory of the manifest file they come from. A CSV row must be one line (a range read cuts at
line breaks): the launcher refuses a CSV whose first megabyte holds a quoted line break; use
.jsonl or .parquet for multi-line prompts.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_caption.errors import ConfigError
from beam_caption.inputs.refs import ImageRef

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
MANIFEST_FORMATS = (".txt", ".csv", ".jsonl", ".parquet")
_INVENTORY_COLUMNS = ("bucket", "name", "size", "updated")
_CHECK_BYTES = 1 << 20  # how much of a CSV the launcher scans for quoted line breaks
_PARQUET_BATCH_ROWS = 4096
_LINE_EXCERPT = 120


@dataclass(frozen=True)
class ManifestLayout:
    """What the launcher learned of a manifest: its format and its columns (CSV, Parquet)."""

    pattern: str
    format: str
    columns: tuple[str, ...] = ()
    prompt_column: str = "prompt"

    @property
    def inventory(self) -> bool:
        """True for a GCS inventory report (bucket and name columns, no uri column)."""
        return "uri" not in self.columns and {"bucket", "name"} <= set(self.columns)

    def wanted_columns(self) -> list[str]:
        """The columns a row is built from, among those the manifest has."""
        wanted = _INVENTORY_COLUMNS if self.inventory else ("uri", "id", self.prompt_column)
        return [name for name in wanted if name in self.columns]


def manifest_format(path: str) -> str:
    """The manifest's format from its extension (.txt, .csv, .jsonl, .parquet)."""
    extension = os.path.splitext(path)[1].lower()
    if extension not in MANIFEST_FORMATS:
        raise ConfigError(
            f"manifest {path!r} has an unknown extension; use one of {', '.join(MANIFEST_FORMATS)}"
        )
    return extension


def manifest_files(pattern: str, limit: int | None = None) -> list[str]:
    """The files `pattern` (a path or a glob) names, sorted; at most `limit` of them."""
    result = FileSystems.match([pattern], limits=[limit] if limit else None)[0]
    return sorted(meta.path for meta in result.metadata_list)


def inspect_manifest(pattern: str, prompt_column: str = "prompt") -> ManifestLayout:
    """The manifest's layout from its first file; raises a one-line ConfigError for a manifest
    that cannot work (no file, no uri column, a CSV with multi-line rows, a "[" in its path)."""
    fmt = manifest_format(pattern)
    files = manifest_files(pattern, limit=1)
    if not files:
        raise ConfigError(f"--manifest {pattern!r} does not exist")
    if "[" in files[0]:
        # Beam's ReadAll transforms match each file's own path again as a glob, so they read
        # nothing of it (the run would end with no rows and exit 0).
        raise ConfigError(f"--manifest {files[0]!r}: Beam cannot read a file whose path holds "
                          "'['; copy or rename it")
    columns: tuple[str, ...] = ()
    if fmt == ".csv":
        columns = _csv_header(files[0])
    elif fmt == ".parquet":
        with FileSystems.open(files[0], compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            columns = tuple(pq.ParquetFile(handle).schema_arrow.names)
    layout = ManifestLayout(pattern, fmt, columns, prompt_column)
    if fmt in (".csv", ".parquet") and "uri" not in columns and not layout.inventory:
        raise ConfigError(f"manifest {files[0]!r} has no 'uri' column (nor an inventory "
                          "report's 'bucket' and 'name' columns)")
    return layout


def _csv_header(path: str) -> tuple[str, ...]:
    """The header of a CSV manifest; refuses rows that span lines (see the module docstring)."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        head = raw.read(_CHECK_BYTES)
    text = head.decode("utf-8-sig", errors="replace")
    lines = text.splitlines()
    if len(head) == _CHECK_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut by the read
    for number, line in enumerate(lines, start=1):
        if line.count('"') % 2:
            raise ConfigError(f"manifest {path!r} line {number} has a quoted line break; a CSV "
                              "manifest needs one row per line (use .jsonl or .parquet for "
                              "multi-line prompts)")
    return tuple(next(csv.reader(lines[:1]), [])) if lines else ()


def ref_from_line(layout: ManifestLayout, filename: str, line: str | bytes) -> ImageRef | None:
    """The ImageRef a text manifest's line names; None for a blank line or a #-comment."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError:
            return _problem(filename, "the line is not UTF-8 text", repr(line))
    line = line.lstrip("\ufeff")  # a byte-order mark from a spreadsheet export
    if not line.strip() or (layout.format == ".txt" and line.lstrip().startswith("#")):
        return None
    if layout.format == ".txt":
        return _ref(filename, {"uri": line}, "uri", "id", "prompt")
    if layout.format == ".jsonl":
        try:
            row = json.loads(line)
        except ValueError:
            return _problem(filename, "the line is not valid JSON", line)
        if not isinstance(row, dict) or "uri" not in row:
            return _problem(filename, "the line has no 'uri' key", line)
        return _ref(filename, row, "uri", "id", layout.prompt_column)
    try:
        fields = next(csv.reader([line], strict=True))
    except csv.Error as exc:
        return _problem(filename, f"the row is not valid CSV ({exc})", line)
    if len(fields) != len(layout.columns):
        return _problem(filename, f"the row has {len(fields)} fields where the header has "
                                  f"{len(layout.columns)}", line)
    return ref_from_record(layout, filename, dict(zip(layout.columns, fields, strict=True)))


def ref_from_record(layout: ManifestLayout, filename: str,
                    record: Mapping[str, Any]) -> ImageRef | None:
    """The ImageRef a CSV row or Parquet record names (a uri row or an inventory row); None for
    an inventory's folder placeholder (a name ending in "/")."""
    if not layout.inventory:
        return _ref(filename, record, "uri", "id", layout.prompt_column)
    bucket, name = _text(record.get("bucket")), _text(record.get("name"))
    if not bucket or not name:
        return _problem(filename, "the inventory row has no bucket or name", repr(dict(record)))
    if name.endswith("/"):
        return None
    try:
        size = int(record["size"]) if _text(record.get("size")) else None
        modified = _seconds(record.get("updated"))
    except (TypeError, ValueError) as exc:
        return _problem(filename, f"the inventory row has a bad size or time ({exc})",
                        repr(dict(record)))
    return ImageRef(f"gs://{bucket}/{name}", size=size, modified=modified)


def _ref(filename: str, row: Mapping[str, Any], uri: str, source_id: str,
         prompt: str) -> ImageRef:
    text = (_text(row.get(uri)) or "").strip()
    if not text:
        return _problem(filename, "the row's uri is empty", repr(dict(row)))
    base = FileSystems.split(filename)[0]
    return ImageRef(_resolve(text, base), _text(row.get(source_id)) or None,
                    _text(row.get(prompt)) or None)


def _problem(filename: str, reason: str, line: str) -> ImageRef:
    excerpt = line if len(line) <= _LINE_EXCERPT else line[:_LINE_EXCERPT] + "..."
    return ImageRef(filename, problem=f"{reason}: {excerpt}")


def _seconds(value: Any) -> float | None:
    """An inventory `updated` cell (RFC 3339 text, a timestamp or seconds) as epoch seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, int | float):
        return float(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def _text(value: object) -> str | None:
    """A manifest cell as text (ids may be numbers); None stays None."""
    return None if value is None else str(value)


def _resolve(uri: str, base: str) -> str:
    """A manifest entry as an absolute URI: relative paths are relative to the manifest."""
    if _SCHEME.match(uri):
        return uri
    if os.path.isabs(uri):  # '/p/./a.jpg' and '/p//a.jpg' are '/p/a.jpg': one file, one row
        return os.path.normpath(uri)
    if _SCHEME.match(base):
        return FileSystems.join(base, uri)
    return os.path.normpath(os.path.join(base, uri))


def iter_manifest(layout: ManifestLayout) -> Iterator[ImageRef]:
    """Every ImageRef the manifest names, read here (the launcher: counting, checking), file by
    file and never whole; the same parsers as ReadManifest."""
    for path in manifest_files(layout.pattern):
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            if layout.format == ".parquet":
                batches = pq.ParquetFile(handle).iter_batches(
                    batch_size=_PARQUET_BATCH_ROWS, columns=layout.wanted_columns())
                found = (ref_from_record(layout, path, record)
                         for batch in batches for record in batch.to_pylist())
            else:
                lines = iter(handle)
                if layout.format == ".csv":
                    next(lines, None)
                found = (ref_from_line(layout, path, line.rstrip(b"\r\n")) for line in lines)
            yield from (ref for ref in found if ref is not None)


class ReadManifest(beam.PTransform):
    """PBegin -> PCollection[ImageRef]: the manifest's files read in ranges across workers."""

    def __init__(self, layout: ManifestLayout, bundle_bytes: int = 64 << 20) -> None:
        super().__init__()
        self._layout = layout
        self._bundle_bytes = bundle_bytes  # the size of the ranges a file is cut into

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection[ImageRef]:
        """ReadAllFromParquet or ReadAllFromText (raw bytes: bad UTF-8 is a row's problem)."""
        layout = self._layout
        files = pbegin | "ManifestPattern" >> beam.Create([layout.pattern])
        if layout.format == ".parquet":
            records = files | "ReadParquet" >> beam.io.ReadAllFromParquet(
                with_filename=True, columns=layout.wanted_columns(),
                desired_bundle_size=self._bundle_bytes)
            return records | "ParseRecords" >> beam.FlatMap(
                lambda pair: _some(ref_from_record(layout, *pair)))
        lines = files | "ReadLines" >> beam.io.ReadAllFromText(
            with_filename=True, coder=beam.coders.BytesCoder(),
            desired_bundle_size=self._bundle_bytes,
            skip_header_lines=1 if layout.format == ".csv" else 0)
        return lines | "ParseLines" >> beam.FlatMap(
            lambda pair: _some(ref_from_line(layout, *pair)))


def _some(ref: ImageRef | None) -> list[ImageRef]:
    return [] if ref is None else [ref]
