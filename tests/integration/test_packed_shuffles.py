"""The shuffles that move ImageRefs in packs (inputs/spread.py's SpreadRefs, inputs/library.py's
SortLibrary with buckets) on the FnApiRunner: every ref comes out exactly once, whatever the
bundles, the pack size or the number of buckets, and the same way twice in one pipeline."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from beam_caption.inputs.library import SortLibrary, _PackNeighbours
from beam_caption.inputs.refs import ImageRef
from beam_caption.inputs.spread import SpreadRefs, _PackRefs, unpack_refs


def library_refs(count: int) -> list[ImageRef]:
    """`count` photos in 7 folders, each with an .AAE sidecar and every 5th with a Live Photo
    .MOV: neighbours that must meet in one group."""
    refs = []
    for i in range(count):
        folder = f"/roll/{i % 7}"
        refs.append(ImageRef(f"{folder}/IMG_{i:05d}.HEIC", source_id=str(i), size=i))
        refs.append(ImageRef(f"{folder}/IMG_{i:05d}.AAE"))
        if i % 5 == 0:
            refs.append(ImageRef(f"{folder}/IMG_{i:05d}.MOV"))
    return refs


def test_pack_refs_packs_at_most_size_and_flushes_the_rest_at_the_bundle_end() -> None:
    fn = _PackRefs(3)
    fn.start_bundle()
    refs = [ImageRef(f"/p/{i}.jpg") for i in range(8)]
    full = [packed for ref in refs for packed in fn.process(ref)]
    rest = [value.value for value in fn.finish_bundle()]
    assert [len(unpack_refs(p)) for p in full] == [3, 3]
    assert [len(unpack_refs(p)) for p in rest] == [2]
    assert [r for p in full + rest for r in unpack_refs(p)] == refs
    fn.start_bundle()
    assert list(fn.finish_bundle()) == []  # an empty bundle sends nothing


@pytest.mark.parametrize("size", [1, 5, 32, 10_000])
def test_spread_refs_keeps_every_ref_once(size: int) -> None:
    refs = [ImageRef(f"/p/{i}.jpg", prompt="p" if i % 3 else None, size=i) for i in range(257)]
    # Two worker processes, so the refs cross processes and the runner's shuffle buffers.
    options = PipelineOptions(direct_num_workers=2, direct_running_mode="multi_threading")
    with beam.Pipeline(runner=FnApiRunner(), options=options) as pipeline:
        once = (pipeline | "Refs" >> beam.Create(refs, reshuffle=False)
                | "Spread" >> SpreadRefs(size))
        assert_that(once, equal_to(refs), label="Once")
        # Composed twice in one pipeline (and applied again to its own output).
        twice = once | "SpreadAgain" >> SpreadRefs(size)
        assert_that(twice, equal_to(refs), label="Twice")


def test_spread_refs_refuses_an_empty_pack() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SpreadRefs(0)


def test_neighbours_share_a_bucket_and_a_pack() -> None:
    fn = _PackNeighbours(buckets=4)
    fn.start_bundle()
    refs = library_refs(40)
    packs = [kv for ref in refs for kv in fn.process(ref)]
    packs += [value.value for value in fn.finish_bundle()]
    assert {bucket for bucket, _ in packs} <= {"0", "1", "2", "3"}
    bucket_of: dict[str, str] = {}
    for bucket, packed in packs:
        for ref in unpack_refs(packed):
            stem = ref.uri.rsplit(".", 1)[0]
            assert bucket_of.setdefault(stem, bucket) == bucket
    assert sorted(r.uri for _, p in packs for r in unpack_refs(p)) == sorted(r.uri for r in refs)


@pytest.mark.parametrize("buckets", [None, 1, 3, 1024])
def test_sort_library_sends_the_same_files_whatever_the_buckets(buckets: int | None) -> None:
    refs = library_refs(150)
    photos = [ref for ref in refs if ref.uri.endswith(".HEIC")]
    skipped = ([{"uri": r.uri, "kind": "aae_sidecar"} for r in refs if r.uri.endswith(".AAE")]
               + [{"uri": r.uri, "kind": "live_photo_motion"} for r in refs
                  if r.uri.endswith(".MOV")])
    options = PipelineOptions(direct_num_workers=2, direct_running_mode="multi_threading")
    with beam.Pipeline(runner=FnApiRunner(), options=options) as pipeline:
        files = pipeline | beam.Create(refs) | SortLibrary(buckets=buckets)
        assert_that(files.media, equal_to(photos), label="Media")
        assert_that(files.skipped, equal_to(skipped), label="Skipped")


def test_sort_library_refuses_zero_buckets() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SortLibrary(buckets=0)
