"""Input expansion: globs, manifest files and http(s) URLs -> a reshuffled PCollection[ImageRef].

Globs go through Beam FileSystems (local paths, gs://, s3://; `**` crosses directories, `*` does
not), so listing a 50M-object bucket happens on workers, not in the launcher. Manifests (.txt one
URI per line; .csv, .jsonl or .parquet with a `uri` column and optional `id` and `prompt`) are
streamed on a worker too. check_inputs() runs in the launcher first and turns the common mistakes
(a pattern matching nothing, a missing manifest) into a one-line ConfigError.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes, FileMetadata
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from beam_caption.errors import ConfigError
from beam_caption.inputs.fetch import is_url

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
_MANIFEST_FORMATS = (".txt", ".csv", ".jsonl", ".parquet")
_PARQUET_BATCH_ROWS = 4096
_rows_without_uri = Metrics.counter("beam_caption", "manifest_rows_without_uri")


@dataclass(frozen=True)
class ImageRef:
    """One image to caption: where it is, an optional caller id and an optional per-image prompt."""

    uri: str
    source_id: str | None = None
    prompt: str | None = None


def check_inputs(inputs: list[str], manifest: str | None) -> None:
    """Fail fast, in the launcher, on inputs that cannot work; raises a one-line ConfigError.

    Each pattern is matched with a limit of one file, so this stays cheap on huge buckets.
    http(s) URLs are not checked here (their failures become error rows).
    """
    if not inputs and not manifest:
        raise ConfigError("no input: give --input PATTERN (repeatable) or --manifest FILE")
    for raw in inputs:
        if is_url(raw):
            continue
        try:
            patterns = expand_pattern(raw)
            found = [meta for result in FileSystems.match(patterns, limits=[1] * len(patterns))
                     for meta in result.metadata_list]
        except Exception as exc:  # BeamIOError, ValueError (unknown scheme), auth errors
            raise ConfigError(f"--input {raw!r}: cannot list files ({describe_io_error(exc)})"
                              ) from exc
        if not found:
            raise ConfigError(f"--input {raw!r} matched no files")
    if manifest:
        _check_manifest(manifest)


def count_inputs(inputs: list[str], manifest: str | None, limit: int = 2_000_000) -> int | None:
    """How many images the inputs name, for progress projections; None when unknown or too many.

    Lists every local pattern (and reads a local manifest); remote listings and huge inputs are
    not worth the launcher's time for a progress estimate.
    """
    total = 0
    for raw in inputs:
        if is_url(raw):
            total += 1
            continue
        patterns = expand_pattern(raw)
        if _SCHEME.match(patterns[0]):
            return None
        total += sum(len(result.metadata_list)
                     for result in FileSystems.match(patterns, limits=[limit] * len(patterns)))
    if manifest:
        path = normalize_pattern(manifest)
        if _SCHEME.match(path):
            return None
        with contextlib.closing(read_manifest(path)) as refs:
            for _ in refs:
                total += 1
                if total > limit:
                    return None
    return total if total <= limit else None


def _check_manifest(manifest: str) -> None:
    """The manifest exists, has a known extension, a `uri` column and at least one row."""
    path = normalize_pattern(manifest)
    manifest_format(path)
    if not FileSystems.exists(path):
        raise ConfigError(f"--manifest {manifest!r} does not exist")
    try:
        with contextlib.closing(read_manifest(path)) as refs:
            first = next(refs, None)
    except ConfigError:
        raise
    except Exception as exc:  # unreadable or malformed file
        raise ConfigError(f"--manifest {manifest!r} cannot be read ({_short(exc)})") from exc
    if first is None:
        raise ConfigError(f"--manifest {manifest!r} lists no images")


def normalize_pattern(pattern: str) -> str:
    """An input pattern as Beam FileSystems can match it.

    Local paths become absolute (Beam's local filesystem matches nothing for a bare relative
    pattern like '*.jpg'); a local directory or any pattern ending in '/' means everything
    under it ('dir/**').
    """
    if _SCHEME.match(pattern):
        return pattern + "**" if pattern.endswith("/") else pattern
    path = os.path.abspath(os.path.expanduser(pattern))
    if pattern.endswith("/") or os.path.isdir(path):
        return os.path.join(path, "**")
    return path


def expand_pattern(pattern: str) -> list[str]:
    """The patterns to match for one --input, so that 'dir/**/*.jpg' also finds 'dir/a.jpg'.

    Beam's '**' matches one or more directory levels when written '/**/': users mean zero or
    more, as in a shell with globstar. The extra pattern covers the zero-level case; the two never
    match the same file.
    """
    pattern = normalize_pattern(pattern)
    if pattern.count("/**/") != 1:
        return [pattern]
    return [pattern, pattern.replace("/**/", "/")]


def manifest_format(path: str) -> str:
    """The manifest's format from its extension (.txt, .csv, .jsonl, .parquet)."""
    extension = os.path.splitext(path)[1].lower()
    if extension not in _MANIFEST_FORMATS:
        raise ConfigError(
            f"manifest {path!r} has an unknown extension; use one of {', '.join(_MANIFEST_FORMATS)}"
        )
    return extension


def read_manifest(path: str, prompt_column: str = "prompt") -> Iterator[ImageRef]:
    """Stream the ImageRefs a manifest lists; relative paths resolve against its directory.

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
        yield ImageRef(_resolve(uri, base), source_id or None, prompt or None)


Row = tuple[str | None, str | None, str | None]


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


def describe_io_error(exc: BaseException) -> str:
    """One line for a failed listing: a missing bucket by name, else the error's first line.

    Beam wraps the storage client's NotFound in nested BeamIOErrors whose text (a dict repr
    with the request URL) is cut before the reason; the bucket is the useful part.
    """
    bucket = _missing_bucket(exc)
    if bucket:
        return f"bucket {bucket} does not exist or these credentials cannot see it"
    return _short(exc)


def _missing_bucket(exc: BaseException) -> str | None:
    details = getattr(exc, "exception_details", None)
    for path, inner in (details.items() if isinstance(details, dict) else ()):
        # Listing inside an existing bucket never 404s: a NotFound means the bucket is missing.
        if type(inner).__name__ == "NotFound" and str(path).startswith("gs://"):
            return "gs://" + str(path)[len("gs://"):].split("/", 1)[0]
        found = _missing_bucket(inner) if isinstance(inner, BaseException) else None
        if found:
            return found
    return None


def _short(exc: BaseException) -> str:
    """First line of an exception, bounded, for a one-line error message."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


def _file_to_ref(metadata: FileMetadata) -> ImageRef:
    """A matched file as an ImageRef."""
    return ImageRef(metadata.path)


class ExpandInputs(beam.PTransform):
    """PBegin -> PCollection[ImageRef]: globs, http(s) URLs and a manifest, then a Reshuffle.

    Identical URIs are kept (deduplication is by content, later). The Reshuffle breaks fusion so
    a runner spreads the images over workers instead of keeping them where they were listed.
    """

    def __init__(self, inputs: Iterable[str], manifest: str | None = None, *,
                 prompt_column: str = "prompt") -> None:
        super().__init__()
        self._prompt_column = prompt_column
        inputs = list(inputs)
        if not inputs and not manifest:
            raise ConfigError("no input: give --input PATTERN (repeatable) or --manifest FILE")
        self._urls = [uri for uri in inputs if is_url(uri)]
        self._patterns = [p for uri in inputs if not is_url(uri) for p in expand_pattern(uri)]
        self._manifest = normalize_pattern(manifest) if manifest else None
        if self._manifest:
            manifest_format(self._manifest)

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection[ImageRef]:
        """Each kind of input becomes a branch of ImageRefs; the branches are merged."""
        branches = []
        if self._patterns:
            branches.append(
                pbegin
                | "Patterns" >> beam.Create(self._patterns)
                # check_inputs already refused an --input that matches nothing at all; one of
                # its expanded patterns (see expand_pattern) may match nothing on its own.
                | "MatchFiles" >> fileio.MatchAll(fileio.EmptyMatchTreatment.ALLOW_IF_WILDCARD)
                | "FilesToRefs" >> beam.Map(_file_to_ref)
            )
        if self._urls:
            branches.append(pbegin | "Urls" >> beam.Create([ImageRef(uri) for uri in self._urls]))
        if self._manifest:
            branches.append(
                pbegin
                | "Manifest" >> beam.Create([self._manifest])
                | "ReadManifest" >> beam.FlatMap(read_manifest, self._prompt_column)
            )
        merged = tuple(branches) | "Merge" >> beam.Flatten()
        return merged | "Reshuffle" >> beam.Reshuffle()
