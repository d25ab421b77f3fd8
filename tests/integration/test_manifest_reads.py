"""Manifests and inventory reports through Beam's splittable reads (ReadAllFromText,
ReadAllFromParquet) on the FnApiRunner: every row exactly once however a file is cut into
ranges, the shards of a glob each with its header, GCS inventory reports (CSV and Parquet,
local and on the GCS emulator) naming the same file versions a listing does, and rows that
name no image kept as problems (error rows), never dropped and never a crash.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that

from beam_caption.inputs.manifest import ReadManifest, inspect_manifest
from beam_caption.inputs.refs import ImageRef
from beam_caption.inputs.sources import ExpandInputs, count_inputs
from tests.fixtures.gcs_emulator import gcs_emulator

IN_MEMORY = PipelineOptions(["--direct_running_mode=in_memory", "--direct_num_workers=1"])
ROWS = 20_000


def _collect(transform: beam.PTransform, check) -> None:
    with beam.Pipeline(runner=FnApiRunner(), options=IN_MEMORY) as pipeline:
        refs = pipeline | transform
        assert_that(refs | beam.combiners.ToList(), check)


def _exactly(expected: list[ImageRef]):
    """A checker: the refs equal `expected` as a multiset (a row read twice fails it)."""
    def check(found: list[list[ImageRef]]) -> None:
        (refs,) = found
        assert len(refs) == len(expected), f"{len(refs)} refs for {len(expected)} rows"
        assert sorted(refs, key=repr) == sorted(expected, key=repr)
    return check


def _write(path: Path, fmt: str, uris: list[str]) -> None:
    if fmt == ".txt":
        path.write_text("".join(f"{u}\n" for u in uris), encoding="utf-8")
    elif fmt == ".jsonl":
        path.write_text("".join(json.dumps({"uri": u, "id": i}) + "\n"
                                for i, u in enumerate(uris)), encoding="utf-8")
    elif fmt == ".csv":
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["uri", "id", "prompt"])
            writer.writerows([u, i, "Say, briefly: what is it?"] for i, u in enumerate(uris))
    else:
        table = pa.table({"uri": uris, "id": list(range(len(uris)))})
        pq.write_table(table, path, row_group_size=250)


def _expected(fmt: str, uris: list[str]) -> list[ImageRef]:
    ids = [None if fmt == ".txt" else str(i) for i in range(len(uris))]
    prompt = "Say, briefly: what is it?" if fmt == ".csv" else None
    return [ImageRef(u, source_id, prompt) for u, source_id in zip(uris, ids, strict=True)]


@pytest.mark.parametrize("fmt", [".txt", ".csv", ".jsonl", ".parquet"])
def test_a_manifest_cut_into_hundreds_of_ranges_yields_every_row_once(
        tmp_path: Path, fmt: str) -> None:
    uris = [f"gs://bucket/photos/{i % 97:02d}/img{i:06d}.jpg" for i in range(ROWS)]
    path = tmp_path / f"big{fmt}"
    _write(path, fmt, uris)
    layout = inspect_manifest(str(path))
    # 4 KB ranges: hundreds of cuts through lines (and for Parquet, 80 row groups).
    _collect(ReadManifest(layout, bundle_bytes=4096), _exactly(_expected(fmt, uris)))


def test_the_shards_of_a_manifest_glob_are_each_read_with_their_header(tmp_path: Path) -> None:
    first = [f"gs://b/a{i}.jpg" for i in range(300)]
    second = [f"gs://b/b{i}.jpg" for i in range(200)]
    _write(tmp_path / "list-0.csv", ".csv", first)
    _write(tmp_path / "list-1.csv", ".csv", second)
    expected = _expected(".csv", first) + _expected(".csv", second)
    _collect(ExpandInputs([], manifest=str(tmp_path / "list-*.csv")), _exactly(expected))
    assert count_inputs([], str(tmp_path / "list-*.csv")) == 500


def _inventory_rows() -> list[dict]:
    return [
        {"project": "42", "bucket": "photos", "name": "2024/a.jpg", "size": "1234",
         "updated": "2024-05-06T07:08:09.123Z", "storageClass": "STANDARD"},
        {"project": "42", "bucket": "photos", "name": "2024/", "size": "0",  # a folder marker
         "updated": "2024-05-06T07:08:09Z", "storageClass": "STANDARD"},
        {"project": "42", "bucket": "photos", "name": "2024/b c.heic", "size": "99",
         "updated": "2024-05-07T00:00:00.5+00:00", "storageClass": "NEARLINE"},
    ]


def _inventory_refs() -> list[ImageRef]:
    return [ImageRef("gs://photos/2024/a.jpg", size=1234,
                     modified=datetime(2024, 5, 6, 7, 8, 9, 123000, UTC).timestamp()),
            ImageRef("gs://photos/2024/b c.heic", size=99,
                     modified=datetime(2024, 5, 7, 0, 0, 0, 500000, UTC).timestamp())]


def test_gcs_inventory_reports_in_csv_and_parquet(tmp_path: Path) -> None:
    rows = _inventory_rows()
    with (tmp_path / "inventory.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    typed = [{**row, "size": int(row["size"]),
              "updated": datetime.fromisoformat(row["updated"].replace("Z", "+00:00"))}
             for row in rows]
    pq.write_table(pa.Table.from_pylist(typed), tmp_path / "inventory.parquet")
    for name in ("inventory.csv", "inventory.parquet"):
        layout = inspect_manifest(str(tmp_path / name))
        assert layout.inventory and layout.wanted_columns() == ["bucket", "name", "size",
                                                                "updated"]
        _collect(ExpandInputs([], manifest=str(tmp_path / name)), _exactly(_inventory_refs()))


def test_rows_that_name_no_image_become_problems_not_crashes(tmp_path: Path) -> None:
    good = str(tmp_path / "good.jpg")
    (tmp_path / "m.jsonl").write_bytes(
        (json.dumps({"uri": good}) + "\n{not json\n" + json.dumps({"id": 3}) + "\n").encode())
    (tmp_path / "m.csv").write_text(f"uri,id\n{good},1\n{good},2,extra\n", encoding="utf-8")
    (tmp_path / "m.txt").write_bytes(good.encode() + b"\n\xff\xfe broken bytes\n")
    cases = {
        "m.jsonl": [ImageRef(good), ImageRef(str(tmp_path / "m.jsonl"),
                                             problem="the line is not valid JSON: {not json"),
                    ImageRef(str(tmp_path / "m.jsonl"),
                             problem="the line has no 'uri' key: {\"id\": 3}")],
        "m.csv": [ImageRef(good, "1"),
                  ImageRef(str(tmp_path / "m.csv"), problem="the row has 3 fields where the "
                           f"header has 2: {good},2,extra")],
        "m.txt": [ImageRef(good), ImageRef(str(tmp_path / "m.txt"),
                                           problem="the line is not UTF-8 text: "
                                                   "b'\\xff\\xfe broken bytes'")],
    }
    for name, expected in cases.items():
        _collect(ExpandInputs([], manifest=str(tmp_path / name)), _exactly(expected))
        # The launcher's count sees the same rows (problems become error rows, so they count).
        assert count_inputs([], str(tmp_path / name)) == len(expected)


@pytest.mark.slow
def test_an_inventory_on_gcs_names_the_versions_a_listing_finds(tmp_path: Path,
                                                                 monkeypatch) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    with gcs_emulator(tmp_path) as (_, env):
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        gcs = storage.Client(project="test", credentials=AnonymousCredentials())
        bucket = gcs.create_bucket("lib")
        for i in range(30):
            bucket.blob(f"p{i % 3}/img{i:02d}.jpg").upload_from_string(b"\xff\xd8" * (i + 1))
        # An inventory report as Storage Insights writes it: two CSV shards with headers.
        blobs = [b for b in gcs.list_blobs("lib") if b.name.endswith(".jpg")]
        for shard in (0, 1):
            text = io.StringIO()
            writer = csv.writer(text)
            writer.writerow(["bucket", "name", "size", "updated"])
            writer.writerows(["lib", b.name, b.size, b.updated.isoformat()]
                             for b in blobs[shard::2])
            bucket.blob(f"inventory/report_shard_{shard}.csv").upload_from_string(
                text.getvalue())

        def versions(found: list[list[ImageRef]]) -> None:
            (refs,) = found
            listed = sorted((r.uri, r.version) for r in refs if r.uri.startswith("gs://lib/p"))
            assert len(listed) == 60, "30 from the glob, 30 from the inventory"
            assert listed[0::2] == listed[1::2], "both name the same uri and version"
            assert all(version is not None for _, version in listed)

        _collect(ExpandInputs(["gs://lib/p*/*.jpg"],
                              manifest="gs://lib/inventory/report_shard_*.csv"), versions)


@pytest.mark.slow
def test_a_run_writes_an_error_row_for_each_row_that_names_no_image(tmp_path: Path) -> None:
    from beam_caption.simulator import running_simulator
    from tests.fixtures.photos import make_small_photos
    from tests.integration.pipeline_helpers import IN_MEMORY as RUN_IN_MEMORY
    from tests.integration.pipeline_helpers import read_rows, run_cli

    photos = make_small_photos(tmp_path / "photos", 3)
    manifest = tmp_path / "list.jsonl"
    manifest.write_text("".join(json.dumps({"uri": str(p)}) + "\n" for p in photos)
                        + '{"url": "typo.jpg"}\n', encoding="utf-8")
    out = tmp_path / "out"
    with running_simulator() as sim:
        assert run_cli("run", "--manifest", str(manifest), "--output", str(out),
                       "--base-url", sim.base_url, *RUN_IN_MEMORY) == 0
    assert sorted(r["uri"] for r in read_rows(out, "captions")) == sorted(map(str, photos))
    assert all(r["source_key"] is None for r in read_rows(out, "captions")), "no listed version"
    (error,) = read_rows(out, "errors")
    assert (error["uri"], error["stage"], error["code"]) == (str(manifest), "read",
                                                             "bad_manifest_row")
    assert error["message"] == ("manifest row skipped: the line has no 'uri' key: "
                                '{"url": "typo.jpg"}')
