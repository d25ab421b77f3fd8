"""--concurrency auto on a real run: against a slow endpoint the window grows to what the feed
and the latency call for; a fixed --concurrency stays a hard cap. In-flight counts come from the
simulator's request log (each request's arrival and answer times)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from beam_caption.engine.window import AUTO_START
from beam_caption.simulator import running_simulator
from tests.fixtures.photos import make_small_photos
from tests.integration.pipeline_helpers import IN_MEMORY, read_rows, run_cli

pytestmark = pytest.mark.slow

IMAGES = 240


def _peak_in_flight(log: Path) -> int:
    events = []
    for line in log.read_text().splitlines():
        record = json.loads(line)
        if record["path"].endswith("/chat/completions"):
            events += [(record["started"], 1), (record["ts"], -1)]
    peak = current = 0
    for _, change in sorted(events, key=lambda e: (e[0], e[1])):
        current += change
        peak = max(peak, current)
    return peak


@pytest.mark.parametrize(("flag", "lowest", "highest"), [
    ((), 100, IMAGES),  # auto: from 32 to what 1 s of latency needs
    (("--concurrency", "16"), 1, 16),
])
def test_the_window_follows_a_slow_endpoint_unless_fixed(tmp_path: Path, flag, lowest,
                                                         highest) -> None:
    make_small_photos(tmp_path / "photos", IMAGES)
    log = tmp_path / "sim.jsonl"
    with running_simulator(latency_ms=1000, latency_sigma=0.1, log_path=str(log)) as sim:
        code = run_cli("run", "--input", str(tmp_path / "photos" / "*.jpg"), "--output",
                       str(tmp_path / "out"), "--base-url", sim.base_url, *flag, *IN_MEMORY)
    assert code == 0
    assert len(read_rows(tmp_path / "out", "captions")) == IMAGES
    assert lowest <= _peak_in_flight(log) <= highest


def test_the_window_grows_before_the_first_answer_comes_back(tmp_path: Path) -> None:
    """A slow endpoint's first answers take a whole latency: the window grows meanwhile from
    how long the oldest request has waited, instead of holding at its start for that long."""
    make_small_photos(tmp_path / "photos", IMAGES)
    log = tmp_path / "sim.jsonl"
    with running_simulator(latency_ms=2500, latency_sigma=0.05, log_path=str(log)) as sim:
        code = run_cli("run", "--input", str(tmp_path / "photos" / "*.jpg"), "--output",
                       str(tmp_path / "out"), "--base-url", sim.base_url, *IN_MEMORY)
    assert code == 0
    assert len(read_rows(tmp_path / "out", "captions")) == IMAGES
    requests = [json.loads(line) for line in log.read_text().splitlines()]
    first_answer = min(r["ts"] for r in requests if r["path"].endswith("/chat/completions"))
    sent_before = sum(1 for r in requests
                      if r["path"].endswith("/chat/completions") and r["started"] < first_answer)
    assert sent_before > AUTO_START
