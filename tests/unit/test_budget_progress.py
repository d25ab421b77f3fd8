"""The spend cap's arithmetic and the progress line, with injected clocks."""

from __future__ import annotations

import logging

import pytest

from beam_caption.budget import SpendCap
from beam_caption.pricing import load_prices
from beam_caption.progress import Progress


def test_worst_case_is_prompt_plus_the_whole_output_cap() -> None:
    cap = SpendCap(1.0, load_prices()["gpt-5.4-nano"])
    assert cap.worst_case_usd(1000, 60) == pytest.approx((1000 * 0.20 + 60 * 1.25) / 1e6)


def test_reservations_refuse_what_would_pass_the_share() -> None:
    cap = SpendCap(1.0, load_prices()["gpt-5.4-nano"])
    assert cap.try_reserve(0.6)
    assert not cap.try_reserve(0.5), "0.6 reserved + 0.5 > 1.0"
    cap.settle(0.6, 0.2)  # the answer cost less than its worst case
    assert cap.spent_usd == pytest.approx(0.2)
    assert cap.try_reserve(0.5)
    assert not cap.try_reserve(0.31)


def test_no_cap_counts_but_never_refuses() -> None:
    cap = SpendCap(None, load_prices()["gpt-5.4-nano"])
    assert all(cap.try_reserve(10.0) for _ in range(5))
    cap.settle(10.0, 3.0)
    assert cap.spent_usd == 3.0


def test_unknown_price_reserves_nothing() -> None:
    assert SpendCap(1.0, None).worst_case_usd(10_000, 1000) == 0.0


def test_progress_logs_at_most_once_per_interval_and_projects_cost(caplog) -> None:
    now = [100.0]
    progress = Progress(10.0, expected_images=1000, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="beam_caption.progress")
    for _ in range(5):
        now[0] += 1
        progress.record(ok=True, tokens=100, cost_usd=0.001)
    assert caplog.records == []
    now[0] += 6  # 11 s after the start
    progress.record(ok=False)
    assert len(caplog.records) == 1
    line = caplog.records[0].getMessage()
    assert "6 images done (1 errors)" in line and "$0.0050 so far" in line
    assert "projected $0.83 for all 1000 images" in line
    assert "0.5 images/s" in line


def test_snapshots_add_up_across_workers(tmp_path) -> None:
    from beam_caption.live import describe, read_snapshots

    now = [0.0]
    first = Progress(0, snapshot_dir=str(tmp_path), clock=lambda: now[0])
    first.record(ok=True, tokens=10, cost_usd=0.5)
    first.record(ok=False)
    first.flush()
    (tmp_path / "progress-99999.json").write_text(
        '{"done": 3, "errors": 0, "tokens": 30, "cost_usd": 1.5}')
    (tmp_path / "progress-12345.json.tmp").write_text("{half a fi")
    totals = read_snapshots(str(tmp_path))
    assert totals == {"done": 5, "errors": 1, "tokens": 40, "cost_usd": 2.0}
    line = describe(totals, expected=10, elapsed_s=5.0)
    assert line == "5/10 images, 1.0/s, 1 errors, 40 tokens, $2.0000, ETA 0m05s"


def test_waits_are_reported_as_whole_throttling_seconds_for_the_autoscaler() -> None:
    from beam_caption import metrics as m

    collector = m.MetricsCollector()
    collector.inc(m.THROTTLED_MS, 700)
    collector.inc(m.BACKOFF_MS, 600)
    counters, _, _ = collector.drain()
    assert counters[m.THROTTLING_SECONDS] == 1 and counters[m.THROTTLED_MS] == 700
    collector.inc(m.THROTTLED_MS, 800)  # 300 ms carried + 800 ms
    counters, _, _ = collector.drain()
    assert counters[m.THROTTLING_SECONDS] == 1
    counters, _, _ = collector.drain()
    assert m.THROTTLING_SECONDS not in counters
