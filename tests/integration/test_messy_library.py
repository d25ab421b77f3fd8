"""A real library is messy: links that loop or lead nowhere, names with dots and question marks,
sidecars another tool wrote, the same file listed twice. Through `beam-caption run` against the
simulator, every listed file ends as exactly one row or one counted skip, nothing crashes, and
the money in run-summary.json is what the simulator billed."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from beam_caption.simulator import running_simulator
from tests.fixtures import phone
from tests.integration.pipeline_helpers import IN_MEMORY, read_rows, read_summary, run_cli

pytestmark = pytest.mark.slow


def _photo(path: Path, shade: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(phone.encode(phone.picture((320, 240), (shade, 90, 160)), "JPEG"))


def _messy(folder: Path) -> None:
    _photo(folder / "a.jpg", 10)
    _photo(folder / "trip" / "2024.07.03 sunset.jpg", 30)
    (folder / "trip" / "2024.07.03 beach walk.mp4").write_bytes(phone.video(seconds=2.0))
    _photo(folder / "trip" / "why?.jpg", 50)
    _photo(folder / "trip" / "IMG_9.jpg", 70)
    # Takeout's keys, another tool's shapes: ignored, the photo is still captioned.
    (folder / "trip" / "IMG_9.jpg.json").write_text(
        json.dumps({"photoTakenTime": "2020-01-01 10:00", "geoData": [1, 2]}))
    (folder / "trip" / "loop").symlink_to("..")  # back to the library: not followed
    (folder / "gone.jpg").symlink_to(folder / "nowhere" / "x.jpg")  # a not_found row
    (folder / "trip" / "self.jpg").symlink_to("self.jpg")  # a loop of one link: read_error
    # A Latin-1 name from an old disk: not UTF-8, so an error row that names it escaped.
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.jpg"), "wb") as latin:
        latin.write((folder / "a.jpg").read_bytes())


def test_every_file_of_a_messy_library_is_one_row_or_one_skip(tmp_path: Path) -> None:
    library, out = tmp_path / "library", tmp_path / "out"
    _messy(library)
    with running_simulator() as sim:
        code = run_cli("run", "--input", str(library), "--input", str(library / "*.jpg"),
                       "--output", str(out), "--base-url", sim.base_url, *IN_MEMORY)
        stats = sim.stats()
    assert code == 0
    captions, errors = read_rows(out, "captions"), read_rows(out, "errors")
    names = Counter(Path(r["uri"]).relative_to(library).as_posix() for r in captions)
    assert names == Counter({"a.jpg": 1, "trip/2024.07.03 sunset.jpg": 1,
                             "trip/2024.07.03 beach walk.mp4": 1, "trip/why?.jpg": 1,
                             "trip/IMG_9.jpg": 1})
    assert sorted((Path(r["uri"]).name, r["code"]) for r in errors) == [
        ("caf\\xe9.jpg", "bad_file_name"), ("gone.jpg", "not_found"), ("self.jpg", "read_error")]
    assert "symbolic links" in next(r["message"] for r in errors if r["code"] == "read_error")
    summary = read_summary(out)
    # a.jpg, gone.jpg and the Latin-1 name matched both inputs: one row each, and each second
    # listing counted.
    assert summary["skipped"] == {"takeout_json": 1, "listed_again": 3}
    # Five requests (the clip's frames go in one), no image in two of them.
    assert stats["requests"]["total"] == 5 and set(stats["successes_by_image"].values()) == {1}
    assert summary["cost_usd"] == pytest.approx(stats["cost_usd"]["realtime"])
    assert summary["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in captions))


def test_a_manifest_that_repeats_a_file_pays_and_counts_it_once(tmp_path: Path) -> None:
    _photo(tmp_path / "a.jpg", 10)
    _photo(tmp_path / "b.jpg", 200)
    manifest = tmp_path / "list.csv"
    # The same file thrice as one listing (an absolute path spelled two more ways among them),
    # and once under a caller's id of its own.
    manifest.write_text(f"uri,id\na.jpg,\n{tmp_path}/./a.jpg,\nb.jpg,\n{tmp_path}//a.jpg,\n"
                        "a.jpg,mine\n")
    out = tmp_path / "out"
    with running_simulator() as sim:
        code = run_cli("run", "--manifest", str(manifest), "--output", str(out),
                       "--base-url", sim.base_url, *IN_MEMORY)
        stats = sim.stats()
    assert code == 0
    rows = read_rows(out, "captions")
    assert sorted((Path(r["uri"]).name, r["source_id"] or "") for r in rows) == [
        ("a.jpg", ""), ("a.jpg", "mine"), ("b.jpg", "")]
    # One of a.jpg's two rows paid; the other names it as its payer.
    assert sorted(r["deduplicated"] for r in rows if r["uri"].endswith("a.jpg")) == [False, True]
    summary = read_summary(out)
    assert summary["skipped"] == {"listed_again": 2}
    assert stats["requests"]["total"] == 2
    assert summary["cost_usd"] == pytest.approx(stats["cost_usd"]["realtime"])
    assert summary["cost_usd"] == pytest.approx(
        sum(r["cost_usd"] for r in rows if not r["deduplicated"]))
