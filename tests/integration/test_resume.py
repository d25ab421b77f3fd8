"""Interrupted runs resume without paying twice; a growing library is captioned incrementally."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from beam_caption.simulator import running_simulator
from tests.fixtures.photos import make_small_photos
from tests.integration.pipeline_helpers import IN_MEMORY, read_rows, read_summary, run_cli

pytestmark = pytest.mark.slow


def _run(sim, photos: Path, out: Path, *extra: str) -> int:
    return run_cli("run", "--input", str(photos / "*"), "--output", str(out),
                   "--base-url", sim.base_url, *IN_MEMORY, *extra)


def test_interrupted_run_resumes_to_exactly_one_row_per_image(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_small_photos(photos, 60)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "out"
    with running_simulator(latency_ms=10) as sim:
        assert _run(sim, photos, out, "--max-cost-usd", "0.0006") == 1  # the cap interrupts
        first = read_rows(out, "captions")
        assert 0 < len(first) < 60
        assert {e["code"] for e in read_rows(out, "errors")} <= {"budget_exceeded",
                                                                 "decode_error"}
        assert _run(sim, photos, out) == 2, "a non-empty output needs --resume or --overwrite"

        assert _run(sim, photos, out, "--resume") == 0
        after_resume = sim.stats()
        assert _run(sim, photos, out, "--resume") == 0
        after_second = sim.stats()

    captions = read_rows(out, "captions")
    names = sorted(Path(r["uri"]).name for r in captions)
    assert names == sorted(p.name for p in photos.glob("photo*.jpg")), "every image exactly once"
    assert len({r["run_id"] for r in captions}) == 2, "new rows went to new shard files"
    # The earlier budget rows were replaced: only the permanent error is left, once.
    errors = read_rows(out, "errors")
    assert [(Path(e["uri"]).name, e["code"]) for e in errors] == [("broken.jpg", "decode_error")]
    # No image was answered twice, and the second resume sent nothing at all.
    assert set(after_resume["successes_by_image"].values()) == {1}
    assert len(after_resume["successes_by_image"]) == 60
    assert after_second["requests"]["total"] == after_resume["requests"]["total"]
    assert read_summary(out)["engine"].get("already_captioned") == 60


def test_incremental_sends_only_new_photos(tmp_path: Path) -> None:
    library = tmp_path / "library"
    make_small_photos(library, 20)
    with running_simulator() as sim:
        assert _run(sim, library, tmp_path / "week1") == 0
        shutil.copytree(library, tmp_path / "grown")
        make_small_photos(tmp_path / "new", 5, seed=99)
        for path in (tmp_path / "new").iterdir():
            shutil.copy(path, tmp_path / "grown" / f"new-{path.name}")
        before = sim.stats()["requests"]["total"]
        assert _run(sim, tmp_path / "grown", tmp_path / "week2", "--incremental",
                    str(tmp_path / "week1")) == 0
        sent = sim.stats()["requests"]["total"] - before
    assert sent == 5
    rows = read_rows(tmp_path / "week2", "captions")
    assert sorted(Path(r["uri"]).name for r in rows) == sorted(
        f"new-{p.name}" for p in (tmp_path / "new").iterdir())


def test_incremental_needs_an_output_with_captions(tmp_path: Path) -> None:
    make_small_photos(tmp_path / "p", 1)
    (tmp_path / "empty").mkdir()
    with running_simulator() as sim:
        code = _run(sim, tmp_path / "p", tmp_path / "out", "--incremental", str(tmp_path / "empty"))
    assert code == 2


def test_a_resume_reads_none_of_the_files_it_answered(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    make_small_photos(photos, 20)
    out = tmp_path / "out"
    with running_simulator() as sim:
        assert _run(sim, photos, out) == 0
        first = read_rows(out, "captions")
        assert all(row["source_key"] for row in first), "listed files carry their version key"
        # Overwrite every answered file with bytes of the same size and restore its time: a
        # resume that read (or hashed) any of them would send it again or fail to decode it.
        for path in photos.iterdir():
            stat = path.stat()
            path.write_bytes(b"\x00" * stat.st_size)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        make_small_photos(tmp_path / "new", 5, seed=71)
        for path in (tmp_path / "new").iterdir():
            shutil.copy(path, photos / f"new-{path.name}")
        before = sim.stats()["requests"]["total"]
        assert _run(sim, photos, out, "--resume") == 0
        sent = sim.stats()["requests"]["total"] - before
    assert sent == 5
    assert read_rows(out, "errors") == []
    assert len(read_rows(out, "captions")) == 25
    assert read_summary(out)["engine"].get("already_captioned") == 20


def test_a_touched_or_copied_file_is_still_not_paid_for_twice(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    made = make_small_photos(photos, 6)
    with running_simulator() as sim:
        assert _run(sim, photos, tmp_path / "week1") == 0
        os.utime(made[0], (1_000_000_000, 1_000_000_000))  # a new time, the same bytes
        shutil.copy(made[1], photos / "copy-of-1.jpg")  # a new name, the same bytes
        before = sim.stats()["requests"]["total"]
        assert _run(sim, photos, tmp_path / "week2", "--incremental",
                    str(tmp_path / "week1")) == 0
        assert sim.stats()["requests"]["total"] == before, "matched by content, not re-sent"
    assert read_summary(tmp_path / "week2")["engine"].get("already_captioned") == 7


def test_outputs_written_before_source_keys_are_matched_by_content(tmp_path: Path) -> None:
    library = tmp_path / "library"
    make_small_photos(library, 8)
    with running_simulator() as sim:
        assert _run(sim, library, tmp_path / "old") == 0
        for path in (tmp_path / "old").glob("captions-*.parquet"):
            table = pq.read_table(path)
            pq.write_table(table.drop_columns(["source_key"]), path)  # as an older version wrote
        make_small_photos(tmp_path / "more", 3, seed=5)
        for path in (tmp_path / "more").iterdir():
            shutil.copy(path, library / f"more-{path.name}")
        before = sim.stats()["requests"]["total"]
        assert _run(sim, library, tmp_path / "new", "--incremental", str(tmp_path / "old")) == 0
        assert sim.stats()["requests"]["total"] - before == 3
