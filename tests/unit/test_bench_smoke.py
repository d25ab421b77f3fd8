"""The benchmark's own logic, kept honest without running a benchmark (no timing assertions).

The corpus builder must be deterministic (a cached corpus is only valid if rebuilding it gives
the same bytes) and make the sizes and formats it promises; the ideal throughput formula and the
simulator-log phase reader are what every figure in bench/RESULTS.md is judged against.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from PIL import Image

from beam_caption.engine.window import AUTO_MAX
from bench import floor
from bench.corpus import KINDS, Kind, corpus, read_list
from bench.scenarios import BC, POOL, SEED, System
from bench.simlog import LogReader


def test_corpus_is_deterministic_extends_and_has_promised_sizes(tmp_path: Path,
                                                                monkeypatch) -> None:
    # A tiny kind with a PNG and an EXIF-rotated JPEG, so every branch of the recipe runs fast.
    monkeypatch.setitem(KINDS, "tiny", Kind("tiny", (160, 120), 90, png_every=3,
                                            png_size=(80, 60), rotate_every=2))
    first = read_list(corpus("tiny", 3, root=tmp_path / "a"))
    again = read_list(corpus("tiny", 3, root=tmp_path / "b"))
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in again]
    extended = read_list(corpus("tiny", 4, root=tmp_path / "a"))
    assert extended[:3] == first and len(extended) == 4
    assert len({p.read_bytes() for p in extended}) == 4  # all distinct: dedupe cannot help
    with Image.open(first[0]) as im:
        assert (im.format, im.size) == ("JPEG", (160, 120))
    with Image.open(first[1]) as im:  # stored portrait, shown landscape
        assert (im.size, im.getexif().get(0x0112)) == ((120, 160), 6)
    with Image.open(first[2]) as im:
        assert (im.format, im.size) == ("PNG", (80, 60))


def test_ideal_is_the_tighter_of_in_flight_over_mean_latency_and_rpm() -> None:
    mean = 0.2 * math.exp(0.25 ** 2 / 2)
    assert floor.ideal_images_per_s(64, 200) == 64 / mean
    assert floor.ideal_images_per_s(64, 200, rpm=600) == 10
    assert floor.ideal_images_per_s(64, 200, sigma=0) == 320


def test_in_flight_follows_each_systems_flags() -> None:
    fixed = System("bc", BC, ("--concurrency", "64", "--direct_num_workers=2"))
    assert fixed.in_flight(1000) == 128
    assert fixed.in_flight(10) == 10  # never more than the images
    # --concurrency auto grows to AUTO_MAX per process; a small job runs in one process.
    assert System("bc", BC, ("--direct_num_workers=2",)).in_flight(5000) == 2 * AUTO_MAX
    assert System("bc", BC).in_flight(20_000, 20_000 * 70_000) > AUTO_MAX
    assert System("bc", BC, ("--concurrency", "8")).in_flight(300, 300 * 1_000) == 8
    assert System("pool", POOL, ("--concurrency", "8")).in_flight(10) == 8
    assert System("seed", SEED).in_flight(1000) == 100
    assert System("seed", SEED).in_flight(7) == 7


def test_phase_spans_first_arrival_to_last_answer_of_one_run(tmp_path: Path) -> None:
    log = tmp_path / "sim.jsonl"
    chat = "/v1/chat/completions"
    log.write_text(json.dumps({"path": chat, "ts": 50.0, "latency_ms": 100, "status": 200}) + "\n")
    reader = LogReader(log)
    reader.skip_to_end()  # the earlier run is not part of this one
    with log.open("a") as out:
        for ts, latency, status in ((100.5, 500, 200), (101.0, 200, 200), (101.5, 100, 429)):
            out.write(json.dumps({"path": chat, "ts": ts, "latency_ms": latency,
                                  "status": status}) + "\n")
        out.write(json.dumps({"path": "/v1/files", "ts": 200.0, "latency_ms": 1}) + "\n")
    phase = reader.phase()
    assert phase.ok == 2
    assert phase.seconds == 1.5  # from 100.0 (100.5 - 0.5) to 101.5


def test_the_listing_tables_divide_by_the_floor_of_the_same_tree() -> None:
    from bench.report import listing_section

    def row(where: str, system: str, wall: float, **extra: object) -> dict:
        return {"set": "tree", "where": where, "system": system, "objects": 100, "folders": 2,
                "count": 100, "wall_s": wall, "cpu_s": wall, "tree_peak_rss_mb": 50, **extra}

    listing = {"run_at": "today", "seconds": 9, "rows": [
        row("local", "bare", 0.5), row("local", "beam-caption", 2.0),
        row("gcs", "bare", 1.0), row("gcs", "matchall", 3.0),
        {**row("local", "stream", 0.1), "set": "folder", "peak_mb": 99.9, "baseline_mb": 100.0,
         "seconds": 0.1},
        {**row("local", "match", 0.1), "set": "folder", "peak_mb": 132.0, "baseline_mb": 100.0,
         "seconds": 0.1}]}
    lines = listing_section(listing)
    assert any("beam-caption ExpandInputs" in line and "| 4.0x |" in line for line in lines)
    assert any("Beam fileio.MatchAll |" in line and "| 3.0x |" in line for line in lines)
    folder_rows = [line for line in lines if line.startswith("| local | 100 |")]
    assert [line.split(" | ")[3] for line in folder_rows] == ["0.0", "32.0"]
