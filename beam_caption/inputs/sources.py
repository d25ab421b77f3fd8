"""Input expansion: globs, manifest files and http(s) URLs -> a reshuffled PCollection[ImageRef].

Globs are listed on workers, fanned out by folder (inputs/listing.py); manifests and GCS inventory
reports are read with Beam's splittable reads (inputs/manifest.py). check_inputs() runs in the
launcher first and turns the common mistakes (a pattern matching nothing, a missing manifest)
into a one-line ConfigError; count_inputs() sizes the run for progress projections.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import re
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam

from beam_caption.errors import ConfigError
from beam_caption.inputs.fetch import is_url
from beam_caption.inputs.images import first_line
from beam_caption.inputs.kinds import PHOTO, VIDEO, kind_of
from beam_caption.inputs.listers import Entry
from beam_caption.inputs.listing import Part, first_match, list_part, split
from beam_caption.inputs.manifest import ReadManifest, inspect_manifest, iter_manifest
from beam_caption.inputs.refs import UNREADABLE_NAME, ImageRef
from beam_caption.inputs.spread import SpreadRefs

__all__ = ["ExpandInputs", "ImageRef", "InputTally", "check_inputs", "count_inputs",
           "normalize_pattern", "tally_inputs"]

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
# describe_io_error and the manifest check keep their one-line messages this short.
_MESSAGE_LIMIT = 160


def check_inputs(inputs: list[str], manifest: str | None) -> None:
    """Fail fast, in the launcher, on inputs that cannot work; raises a one-line ConfigError.

    Each pattern is listed only until its first match, so this stays cheap on huge buckets.
    http(s) URLs are not checked here (their failures become error rows).
    """
    if not inputs and not manifest:
        raise ConfigError("no input: give --input PATTERN (repeatable) or --manifest FILE")
    for raw in inputs:
        if is_url(raw):
            continue
        pattern = normalize_pattern(raw)
        try:
            found = first_match(pattern)
        except Exception as exc:  # NotFound (a bucket), BeamIOError, auth errors
            raise ConfigError(f"--input {raw!r}: cannot list files "
                              f"({describe_io_error(exc, pattern)})") from exc
        if found is None:
            raise ConfigError(f"--input {raw!r} matched no files")
    if manifest:
        _check_manifest(manifest)


class InputTally(NamedTuple):
    """What the launcher counted of a local job's inputs."""

    images: int
    bytes: int  # the total size of the images whose size the listing gave
    unsized: int  # images of unknown size (URLs, manifest rows without a size)


def count_inputs(inputs: list[str], manifest: str | None, limit: int = 2_000_000) -> int | None:
    """How many images the inputs name, for progress projections; None when unknown or too many
    (see tally_inputs)."""
    tally = tally_inputs(inputs, manifest, limit)
    return tally.images if tally else None


def tally_inputs(inputs: list[str], manifest: str | None,
                 limit: int = 2_000_000) -> InputTally | None:
    """How many images the inputs name and how many bytes they hold; None when unknown or more
    than `limit` images.

    Lists every local pattern (and reads a local manifest); remote listings and huge inputs are
    not worth the launcher's time for a progress estimate.
    """
    images = size = unsized = 0
    refs: list[Iterator[ImageRef]] = []
    for raw in inputs:
        if is_url(raw):
            refs.append(iter([ImageRef(raw)]))
            continue
        pattern = normalize_pattern(raw)
        if _SCHEME.match(pattern):
            return None
        refs.append(_entry_to_ref(entry) for entry in _matches(pattern))
    if manifest:
        path = normalize_pattern(manifest)
        if _SCHEME.match(path):
            return None
        refs.append(iter_manifest(inspect_manifest(path)))
    for ref in itertools.chain.from_iterable(refs):
        if ref.problem is None and kind_of(ref.uri) not in (PHOTO, VIDEO):
            continue  # a sidecar or system file: SortLibrary skips it unread
        images += 1
        if ref.size is None:
            unsized += 1
        else:
            size += ref.size
        if images > limit:
            return None
    return InputTally(images, size, unsized)


def _check_manifest(manifest: str) -> None:
    """The manifest exists, has a known format and columns, and its first row names an image."""
    path = normalize_pattern(manifest)
    try:
        with contextlib.closing(iter_manifest(inspect_manifest(path))) as refs:
            first = next(refs, None)
    except ConfigError:
        raise
    except Exception as exc:  # unreadable or malformed file, a missing bucket
        reason = describe_io_error(exc, path)
        raise ConfigError(f"--manifest {manifest!r} cannot be read ({reason})") from exc
    if first is None:
        raise ConfigError(f"--manifest {manifest!r} lists no images")
    if first.problem is not None:
        # A first row that names no image means the wrong file or format, not one bad row.
        raise ConfigError(f"--manifest {manifest!r}: its first row names no image "
                          f"({first.problem})")


def normalize_pattern(pattern: str) -> str:
    """An input pattern as Beam FileSystems can match it.

    Local paths become absolute (Beam's local filesystem matches nothing for a bare relative
    pattern like '*.jpg'); a local directory or any pattern ending in '/' means everything
    under it ('dir/**'). A local file or folder that exists is itself, even when its name
    holds glob characters ('Trip [Italy]/', 'why?.jpg'): they are escaped.
    """
    if _SCHEME.match(pattern):
        return pattern + "**" if pattern.endswith("/") else pattern
    path = os.path.abspath(os.path.expanduser(pattern))
    folder = pattern.endswith("/") or os.path.isdir(path)
    if os.path.lexists(path):
        path = glob.escape(path)
    return os.path.join(path, "**") if folder else path


def _matches(pattern: str) -> Iterator[Entry]:
    """Every file `pattern` matches, listed here (the launcher), for counting local inputs."""
    for item in split(pattern):
        yield from list_part(item) if isinstance(item, Part) else [item]


def describe_io_error(exc: BaseException, path: str = "") -> str:
    """One line for a failed listing: a missing bucket by name, else the error's first line.

    Beam wraps the storage client's NotFound in nested BeamIOErrors whose text (a dict repr
    with the request URL) is cut before the reason; the bucket is the useful part. Listing
    inside an existing bucket never 404s, so a NotFound for a gs:// `path` is its bucket.
    """
    if type(exc).__name__ == "NotFound" and path.startswith("gs://"):
        return f"bucket gs://{path[5:].split('/', 1)[0]} does not exist or these credentials " \
               "cannot see it"
    bucket = _missing_bucket(exc)
    if bucket:
        return f"bucket {bucket} does not exist or these credentials cannot see it"
    return first_line(exc, _MESSAGE_LIMIT)


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


def _entry_to_ref(entry: Entry) -> ImageRef:
    """A listed file as an ImageRef, with what identifies its version. A local name that is
    not UTF-8 (a Latin-1 'caf\\xe9.jpg' from an old disk) cannot be a Parquet string or a
    request key: it becomes an error row naming it with its bytes escaped."""
    try:
        entry.path.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(entry.path).decode("utf-8", "backslashreplace")
        return ImageRef(shown, problem=f"{UNREADABLE_NAME}; rename it to caption it")
    return ImageRef(entry.path, size=entry.size, modified=entry.modified)


class _SplitListing(beam.DoFn):
    """Step 1 of listing a glob: matches near its root, and the folders to list elsewhere."""

    def process(self, pattern: str) -> Iterator[Any]:
        """Yield Entries, and Parts tagged "parts"."""
        for item in split(pattern):
            yield beam.pvalue.TaggedOutput("parts", item) if isinstance(item, Part) else item


class ExpandInputs(beam.PTransform):
    """PBegin -> PCollection[ImageRef]: globs, http(s) URLs and a manifest, then a Reshuffle.

    Identical URIs are kept (deduplication is by content, later). The Reshuffle (in packed
    chunks, inputs/spread.py) breaks fusion so a runner spreads the images over workers instead
    of keeping them where they were listed.
    """

    def __init__(self, inputs: Iterable[str], manifest: str | None = None, *,
                 prompt_column: str = "prompt", reshuffle: bool = True) -> None:
        """`reshuffle=False` leaves the last Reshuffle out, for a caller whose next step is a
        shuffle of its own (SortLibrary's grouping): one shuffle fewer of every image."""
        super().__init__()
        self._prompt_column = prompt_column
        self._reshuffle = reshuffle
        inputs = list(inputs)
        if not inputs and not manifest:
            raise ConfigError("no input: give --input PATTERN (repeatable) or --manifest FILE")
        self._urls = [uri for uri in inputs if is_url(uri)]
        self._patterns = [normalize_pattern(uri) for uri in inputs if not is_url(uri)]
        # The manifest's header or schema is read now, in the launcher (its columns shape the
        # read); its rows are read on workers.
        self._manifest = (inspect_manifest(normalize_pattern(manifest), prompt_column)
                          if manifest else None)

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection[ImageRef]:
        """Each kind of input becomes a branch of ImageRefs; the branches are merged."""
        branches = []
        if self._patterns:
            # Listing fans out (inputs/listing.py): split each glob at its root on one worker,
            # spread the folders, list each on its own worker, streaming.
            split_up = (pbegin
                        | "Patterns" >> beam.Create(self._patterns)
                        | "SplitListing" >> beam.ParDo(_SplitListing()).with_outputs(
                            "parts", main="entries"))
            listed = (split_up.parts
                      | "SpreadFolders" >> beam.Reshuffle()
                      | "ListFolders" >> beam.FlatMap(list_part))
            branches.append((split_up.entries, listed) | "AllListed" >> beam.Flatten()
                            | "FilesToRefs" >> beam.Map(_entry_to_ref))
        if self._urls:
            branches.append(pbegin | "Urls" >> beam.Create([ImageRef(uri) for uri in self._urls]))
        if self._manifest:
            branches.append(pbegin | "ReadManifest" >> ReadManifest(self._manifest))
        merged = tuple(branches) | "Merge" >> beam.Flatten()
        return merged | "Reshuffle" >> SpreadRefs() if self._reshuffle else merged
