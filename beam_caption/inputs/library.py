"""SortLibrary: a phone library's listed files -> the photos and videos to send, and the files to
skip (sidecars, system files, thumbnails, Live Photo motion parts), counted by kind.

    refs | SortLibrary(settings) -> (media: ImageRef, skipped: {"uri", "kind"} rows)

Files are keyed by folder and stem (inputs/kinds.py's `group_key`) and grouped with a
GroupByKey, so on Dataflow each group of neighbours (a photo, its .AAE, its Takeout JSON, its
Live Photo .MOV) meets on one worker and no worker ever sees the whole library. A Takeout JSON
sidecar is read there (a few hundred bytes) and its capture time and place travel with its
photo's ImageRef (`meta`), filling what the photo's own EXIF lacks.
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue

from beam_caption.inputs import kinds
from beam_caption.inputs.fetch import is_url
from beam_caption.inputs.files import read_uri_bytes
from beam_caption.inputs.metadata import PhotoMeta, takeout_meta
from beam_caption.inputs.refs import BAD_FILE_NAME, ImageRef
from beam_caption.inputs.spread import pack_refs, unpack_refs

_LOG = logging.getLogger(__name__)
SKIPPED = "skipped"
# A Takeout sidecar is a few hundred bytes; a larger .json is something else and is not read.
_MAX_SIDECAR_BYTES = 256 * 1024


@dataclass(frozen=True)
class LibrarySettings:
    """What a run does with videos (`--video keyframes|skip`) and with the motion part of a
    Live Photo (skipped by default: its still is captioned)."""

    video: str = "keyframes"
    live_photo_motion: bool = False  # True: caption the motion part as a video too

    def __post_init__(self) -> None:
        if self.video not in kinds.VIDEO_MODES:
            raise ValueError(f"video must be one of {kinds.VIDEO_MODES}, not {self.video!r}")


class SortedLibrary(NamedTuple):
    """SortLibrary's outputs: the refs to prepare and send, and the skipped rows."""

    media: beam.PCollection
    skipped: beam.PCollection


def sort_group(refs: list[ImageRef], settings: LibrarySettings,
               read_sidecar: Any = None) -> Iterator[ImageRef | kinds.Skipped]:
    """One group of neighbours (same folder and stem) -> refs to send and Skipped files.

    `read_sidecar(uri) -> bytes | None` reads a Takeout JSON (None: not read). A file listed
    again with the same id and prompt is Skipped (LISTED_AGAIN): one listing, one row.
    """
    first: dict[tuple[str, str | None, str | None], ImageRef] = {}
    kept = []
    for ref in refs:
        # A manifest's bad rows all name the manifest: each is its own error row.
        listed = ref.problem_code in (None, BAD_FILE_NAME)
        if listed and first.setdefault((ref.uri, ref.source_id, ref.prompt), ref) is not ref:
            yield kinds.Skipped(ref.uri, kinds.LISTED_AGAIN)
        else:
            kept.append(ref)
    refs = kept
    uris = [ref.uri for ref in refs]
    photos = [ref.uri for ref in refs
              if ref.problem is None and kinds.kind_of(ref.uri) == kinds.PHOTO]
    sidecar_meta: dict[str, PhotoMeta] = {}
    for ref in refs:
        if ref.problem is not None:
            yield ref  # a bad manifest row: PrepareImages makes it an error row
            continue
        kind = kinds.kind_of(ref.uri)
        if kind == kinds.PHOTO:
            continue  # after the sidecars, which may add to its metadata
        if kind == kinds.VIDEO:
            if not settings.live_photo_motion and kinds.live_photo_motion(ref.uri, uris):
                yield kinds.Skipped(ref.uri, kinds.LIVE_PHOTO_MOTION)
            elif settings.video == "skip":
                yield kinds.Skipped(ref.uri, kinds.VIDEO_SKIPPED)
            else:
                yield ref
            continue
        if kind == kinds.TAKEOUT_JSON and read_sidecar is not None:
            target = kinds.takeout_target(ref.uri, photos)
            data = read_sidecar(ref.uri) if target else None
            meta = takeout_meta(data) if data else None
            if target and meta is not None and not meta.is_empty():
                sidecar_meta[target] = meta
        yield kinds.Skipped(ref.uri, kind)
    for ref in refs:
        if ref.problem is None and ref.uri in photos:
            meta = sidecar_meta.get(ref.uri)
            yield dataclasses.replace(ref, meta=meta) if meta is not None else ref


def read_sidecar(uri: str) -> bytes | None:
    """A sidecar's bytes, or None when it cannot be read or is too large to be one (a sidecar
    that cannot be read only loses its metadata: the photo is still sent)."""
    if is_url(uri):
        return None  # URLs are fetched by PrepareImages' guarded fetcher only
    try:
        return read_uri_bytes(uri, max_bytes=_MAX_SIDECAR_BYTES)
    except Exception as exc:  # not_found, too_large, permission: the photo goes on without it
        _LOG.info("sidecar %s not read: %s", uri, exc)
        return None


# Neighbours are packed per bundle before they are grouped, so the runner moves and holds one
# opaque element per pack instead of one ImageRef per file (the local runner holds every
# element of a grouping in the launcher's memory, decoded: ~3 KB per file).
_PACK = 32
# Buckets for a local run: few enough that packs fill up, enough to deal them out evenly to
# the worker processes (the local runner hands out keys round-robin).
LOCAL_BUCKETS = 1024


class _PackNeighbours(beam.DoFn):
    """ImageRefs -> (group, pickled refs): a file's group is its folder and stem, or with
    `buckets` that key's bucket (neighbours always share it)."""

    def __init__(self, buckets: int | None) -> None:
        self._buckets = buckets
        self._packs: dict[str, list[ImageRef]] = {}

    def start_bundle(self) -> None:
        """A bundle starts with nothing packed."""
        self._packs = {}

    def process(self, ref: ImageRef) -> Iterator[tuple[str, bytes]]:
        """Add `ref` to its group's pack; yield the pack once it is full."""
        group = kinds.group_key(ref.uri)
        if self._buckets is not None:
            group = str(zlib.crc32(group.encode("utf-8")) % self._buckets)
        pack = self._packs.setdefault(group, [])
        pack.append(ref)
        if len(pack) >= _PACK:
            yield group, pack_refs(self._packs.pop(group))

    def finish_bundle(self) -> Iterator[WindowedValue]:
        """Every partial pack: each ref leaves the bundle it came in."""
        packs, self._packs = self._packs, {}
        for group, refs in packs.items():
            yield GlobalWindows.windowed_value((group, pack_refs(refs)))


class _SortGroupFn(beam.DoFn):
    def __init__(self, settings: LibrarySettings) -> None:
        self._settings = settings

    def process(self, element: tuple[str, list[bytes]]) -> Iterator[Any]:
        """Yield refs to send, and skipped rows tagged SKIPPED, group by group."""
        _, packs = element
        groups: dict[str, list[ImageRef]] = {}
        for packed in packs:
            for ref in unpack_refs(packed):
                groups.setdefault(kinds.group_key(ref.uri), []).append(ref)
        for key in sorted(groups):
            ordered = sorted(groups[key], key=lambda ref: ref.uri)  # the same output every run
            for item in sort_group(ordered, self._settings, read_sidecar):
                if isinstance(item, kinds.Skipped):
                    yield beam.pvalue.TaggedOutput(SKIPPED, {"uri": item.uri, "kind": item.kind})
                else:
                    yield item


class SortLibrary(beam.PTransform):
    """PCollection[ImageRef] -> SortedLibrary(media refs, skipped rows {"uri", "kind"}).

    `buckets`: None groups by folder and stem (one key per group: the most parallel, for
    Dataflow); a number groups that many buckets of them (a local run: fewer, fuller packs).
    """

    def __init__(self, settings: LibrarySettings | None = None, *,
                 buckets: int | None = None) -> None:
        super().__init__()
        if buckets is not None and buckets < 1:
            raise ValueError(f"buckets must be at least 1, got {buckets}")
        self._settings = settings or LibrarySettings()
        self._buckets = buckets

    def expand(self, refs: beam.PCollection) -> SortedLibrary:
        """Pack by folder and stem, group the neighbours, sort each group."""
        result = (refs
                  | "KeyByStem" >> beam.ParDo(_PackNeighbours(self._buckets))
                  | "GroupNeighbours" >> beam.GroupByKey()
                  | "SortGroups" >> beam.ParDo(_SortGroupFn(self._settings)).with_outputs(
                      SKIPPED, main="media"))
        return SortedLibrary(result.media, result[SKIPPED])
