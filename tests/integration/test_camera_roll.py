"""The generated camera roll (tests/fixtures/camera_roll.py, `make camera-roll-demo`) through
estimate, run and report against the simulator: photos and videos captioned, files skipped by
kind, bursts captioned once, and all of it on the summary and the HTML page."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from beam_caption.simulator import running_simulator
from tests.fixtures.camera_roll import write_camera_roll
from tests.integration.pipeline_helpers import IN_MEMORY, read_rows, read_summary, run_cli

pytestmark = pytest.mark.slow
SECRET = "sk-test-" + "r0ll" * 8


def test_a_camera_roll_goes_through_estimate_run_and_report(tmp_path, capsys) -> None:
    library, out = tmp_path / "library", tmp_path / "captions"
    counts = write_camera_roll(library)
    assert sum(counts.values()) >= 200
    capsys.readouterr()
    assert run_cli("estimate", "--json", "--input", str(library), "--near-dedupe",
                   *IN_MEMORY) == 0
    estimate = json.loads(capsys.readouterr().out)
    with running_simulator(api_key=SECRET) as sim:
        os.environ["BC_TEST_KEY"] = SECRET
        try:
            assert run_cli("run", "--input", str(library), "--output", str(out),
                           "--base-url", sim.base_url, "--api-key-env", "BC_TEST_KEY",
                           "--near-dedupe", "--context", "exif", *IN_MEMORY) == 0
            images_sent = sum(sim.stats()["successes_by_image"].values())
            summary = read_summary(out)
            # Resumed: nothing is sent again (videos, context lines and followers included).
            assert run_cli("run", "--input", str(library), "--output", str(out),
                           "--base-url", sim.base_url, "--api-key-env", "BC_TEST_KEY",
                           "--near-dedupe", "--context", "exif", "--resume", *IN_MEMORY) == 0
            assert sum(sim.stats()["successes_by_image"].values()) == images_sent
        finally:
            del os.environ["BC_TEST_KEY"]
    resumed = read_summary(out)
    assert resumed["captions"] == 0 and resumed["engine"]["already_captioned"] == 172
    captions = read_rows(out, "captions")
    skipped_kinds = ("aae_sidecar", "takeout_json", "live_photo_motion", "system_file",
                     "thumbnail", "xmp_sidecar", "document")
    assert {k: summary["skipped"][k] for k in skipped_kinds} == {k: counts[k]
                                                                  for k in skipped_kinds}
    assert estimate["skipped"] == summary["skipped"]
    assert sum(1 for r in captions if r["media_type"] == "video") == counts["video"]
    assert summary["errors"] == counts["broken"]
    saved = summary["near_dedupe"]["requests_saved"]
    assert 0.8 * 6 * 5 <= saved <= estimate["near_duplicates"]["max"]
    assert len(captions) == (counts["photo"] + counts["burst_shot"] + counts["screenshot"]
                             + counts["video"])
    # A burst's followers were never sent; a video's request sent its keyframes.
    assert summary["engine"]["requests"] == len(captions) - saved
    assert images_sent == len(captions) - saved + 3 * counts["video"]
    assert run_cli("report", str(out), "--html", str(out / "report.html")) == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    for text in ("requests saved (near-dedupe)", "files skipped (not sent)", "live_photo_motion",
                 'class="tag">video<', 'class="tag">near-duplicate<'):
        assert text in page, text
    report = json.loads((out / "report.json").read_text())
    assert report["near_dedupe"]["requests_saved"] == saved and report["videos"] == 6
    assert Path(out / "report.html").stat().st_size < 2_000_000
