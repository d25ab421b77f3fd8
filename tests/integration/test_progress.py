"""Live progress of a local run: a periodic line with the run's totals when not on a terminal."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from beam_caption.simulator import running_simulator
from tests.fixtures.photos import make_small_photos
from tests.integration.pipeline_helpers import IN_MEMORY, run_cli

pytestmark = pytest.mark.slow


def test_progress_lines_count_up_to_the_total(tmp_path: Path, caplog) -> None:
    make_small_photos(tmp_path / "photos", 40)
    caplog.set_level(logging.INFO, logger="beam_caption.cli.live")
    with running_simulator(latency_ms=150, max_concurrency=4) as sim:
        code = run_cli("run", "--input", str(tmp_path / "photos" / "*.jpg"), "--output",
                       str(tmp_path / "out"), "--base-url", sim.base_url, "--concurrency", "4",
                       "--progress-interval", "0.5", *IN_MEMORY)
    assert code == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "beam_caption.cli.live"]
    done = [int(m.group(1)) for line in lines if (m := re.search(r"(\d+)/40 images", line))]
    assert len(done) >= 2 and done == sorted(done), lines
    assert any("$" in line and "ETA" in line for line in lines)


def test_a_small_local_job_runs_in_process_and_says_so(tmp_path: Path, caplog) -> None:
    make_small_photos(tmp_path / "photos", 12)
    caplog.set_level(logging.INFO, logger="beam_caption")
    with running_simulator() as sim:
        code = run_cli("run", "--input", str(tmp_path / "photos" / "*.jpg"), "--output",
                       str(tmp_path / "out"), "--base-url", sim.base_url, "--rpm", "600")
    assert code == 0
    said = [r.getMessage() for r in caplog.records if "running in this process" in r.getMessage()]
    assert said and said[0].startswith("12 images (0 MB)"), said
    # The limits are the one process's: nothing is divided among workers that do not exist.
    division = [r.getMessage() for r in caplog.records if "divided among" in r.getMessage()]
    assert division == ["--rpm divided among 1 worker processes (one local process "
                        "(--direct_running_mode in_memory))"]
