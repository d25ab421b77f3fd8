"""SpreadRefs: a Reshuffle of ImageRefs that moves them in packed chunks, not one by one.

A Reshuffle is where a runner redistributes the images over its workers. Moving each ImageRef
on its own costs per element what the image's URI is worth many times over: a random key, a
timestamp, a window, and on the local runner a decoded Python object per element held in the
launcher's grouping table until the stage is partitioned (measured: ~3 KB of launcher memory per
image, 31 MB at 10,000 images, ~230 MB at 76,000). SpreadRefs packs up to `CHUNK` refs of one
bundle into one pickled bytes element, reshuffles those, and unpacks them on the other side, so
the runner holds and moves one opaque element per chunk.

The chunk is small enough that a few hundred images still spread over every worker (the local
runner deals chunks out round-robin; Dataflow balances work items of chunks), and a chunk of
photos is seconds of work, so no worker waits long on another's last chunk.
"""

from __future__ import annotations

import pickle
import zlib
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindows

from beam_caption.inputs.refs import ImageRef

CHUNK = 32


class _PackRefs(beam.DoFn):
    """ImageRefs -> pickled lists of at most `size` refs, within one bundle."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._refs: list[ImageRef] = []

    def start_bundle(self) -> None:
        """A bundle starts with nothing packed."""
        self._refs = []

    def process(self, ref: ImageRef) -> Iterator[bytes]:
        """Add `ref`; yield a chunk once it is full."""
        self._refs.append(ref)
        if len(self._refs) >= self._size:
            yield self._take()

    def finish_bundle(self) -> Iterator[beam.utils.windowed_value.WindowedValue]:
        """The bundle's last, partial chunk: every ref leaves the bundle it came in."""
        if self._refs:
            yield GlobalWindows.windowed_value(self._take())

    def _take(self) -> bytes:
        packed = pack_refs(self._refs)
        self._refs = []
        return packed


def pack_refs(refs: list[ImageRef]) -> bytes:
    """`refs` as one compressed bytes element: the local runner holds every shuffled element
    twice until the run ends (received, then dealt out), so its size is launcher memory;
    paths share long prefixes and zlib at level 1 takes them to ~1/3 for ~0.1 us per byte."""
    return zlib.compress(pickle.dumps(refs, protocol=pickle.HIGHEST_PROTOCOL), 1)


def unpack_refs(packed: bytes) -> list[ImageRef]:
    """The ImageRefs of one pack, in the order they were packed."""
    return pickle.loads(zlib.decompress(packed))


class SpreadRefs(beam.PTransform):
    """PCollection[ImageRef] -> the same refs, reshuffled in chunks of at most `size`."""

    def __init__(self, size: int = CHUNK) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"chunk size must be at least 1, got {size}")
        self._size = size

    def expand(self, refs: beam.PCollection[ImageRef]) -> beam.PCollection[ImageRef]:
        """Pack, Reshuffle, unpack."""
        return (refs
                | "Pack" >> beam.ParDo(_PackRefs(self._size)).with_output_types(bytes)
                | "Reshuffle" >> beam.Reshuffle()
                | "Unpack" >> beam.FlatMap(unpack_refs))
