"""Listing at scale through the real ExpandInputs: a local tree of 100,000 tiny files and a Cloud
Storage bucket (emulator) of 20,000 objects under 200 prefixes. Every file arrives once, every
folder or prefix is listed once, and the work is split into parts other workers can take.
Memory and time per object count are measured in bench/listing.py, not asserted here.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from beam_caption.inputs import listers
from beam_caption.inputs.listing import Part, split
from beam_caption.inputs.sources import ExpandInputs
from tests.fixtures.gcs_emulator import fill_bucket, gcs_emulator

pytestmark = pytest.mark.slow

IN_MEMORY = PipelineOptions(["--direct_running_mode=in_memory", "--direct_num_workers=1"])


def _expand_and_count(pattern: str, expected: int) -> None:
    with beam.Pipeline(runner=FnApiRunner(), options=IN_MEMORY) as p:
        counted = (p | ExpandInputs([pattern])
                   | beam.Map(lambda ref: ref.uri)
                   | beam.combiners.Count.Globally())
        assert_that(counted, equal_to([expected]))


@pytest.fixture(scope="module")
def local_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree100k")
    for folder in range(200):
        path = root / f"f{folder:03d}"
        path.mkdir()
        for i in range(500):
            with open(path / f"img{i:04d}.jpg", "wb") as handle:
                handle.write(b"\xff\xd8")
    return root


def test_a_local_tree_of_100000_files_is_split_and_listed_once(local_tree: Path,
                                                                monkeypatch) -> None:
    calls: Counter = Counter()
    real = os.scandir

    def scandir(path):  # counts our folders; other callers may pass a descriptor
        if isinstance(path, str) and path.startswith(str(local_tree)):
            calls[os.path.normpath(path)] += 1
        return real(path)

    monkeypatch.setattr(listers.os, "scandir", scandir)
    _expand_and_count(f"{local_tree}/**/*.jpg", 100_000)
    assert len(calls) == 201 and set(calls.values()) == {1}, "every folder listed once"
    parts = [item for item in split(f"{local_tree}/**/*.jpg") if isinstance(item, Part)]
    assert len(parts) == 200, "one part per folder, for 200 workers to take"


@pytest.fixture(scope="module")
def gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    """(the emulator, gs://big holding 20,000 photos under 200 prefixes and two others)."""
    with gcs_emulator(tmp_path_factory.mktemp("adc")) as (server, env), \
            pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        names = (f"photos/p{i % 200:03d}/img{i:06d}.jpg" for i in range(20_000))
        assert fill_bucket(server, "big", names) == 20_000
        fill_bucket(server, "big", ["photos/README.txt", "other/x.jpg"])
        yield server, "gs://big"


@pytest.fixture(scope="module")
def bucket(gcs: tuple[Any, str]) -> str:
    return gcs[1]


def test_a_bucket_of_20000_objects_under_200_prefixes_is_listed_once_per_prefix(
        bucket: str, monkeypatch) -> None:
    listed: Counter = Counter()
    for method in ("children", "walk"):
        real = getattr(listers.GcsLister, method)

        def counting(self, folder, _real=real, _method=method):
            listed[(_method, folder)] += 1
            yield from _real(self, folder)

        monkeypatch.setattr(listers.GcsLister, method, counting)
    _expand_and_count(f"{bucket}/photos/**/*.jpg", 20_000)
    walked = [folder for (method, folder) in listed if method == "walk"]
    assert len(walked) == 200 and set(listed.values()) == {1}, "each prefix once"
    assert not any(folder.startswith(f"{bucket}/other") for _, folder in listed), \
        "nothing outside the pattern's root is listed"


def test_listings_follow_pages_as_cloud_storage_returns_them(gcs: tuple[Any, str],
                                                             monkeypatch) -> None:
    from tests.fixtures import gcs_emulator as emulator

    pages: Counter = Counter()
    real = emulator._paged_ls

    def counting(request, *args, **kwargs):
        pages[(request.query.get("prefix") or [""])[0]] += 1
        return real(request, *args, **kwargs)

    # 1,500 sub-prefixes under one folder (a delimiter listing of two pages) and 2,500 objects
    # in one prefix (three pages); a client that read only the first page would miss most.
    server_names = [f"paged/many/d{i:04d}/x.jpg" for i in range(1_500)]
    server_names += [f"paged/flat/img{i:05d}.jpg" for i in range(2_500)]
    monkeypatch.setattr(emulator, "_paged_ls", counting)
    for _, handlers in emulator.emulator_server.HANDLERS:
        if handlers.get(emulator.emulator_server.GET) is real:
            monkeypatch.setitem(handlers, emulator.emulator_server.GET, counting)
    server, bucket = gcs
    fill_bucket(server, "big", server_names)
    _expand_and_count(f"{bucket}/paged/many/*/*.jpg", 1_500)
    _expand_and_count(f"{bucket}/paged/flat/*.jpg", 2_500)
    assert pages["paged/many/"] >= 2 and pages["paged/flat/"] >= 3
