"""The spend cap's arithmetic and the progress line, with injected clocks."""

from __future__ import annotations

import asyncio
import logging

import pytest

from beam_caption.cost.pricing import load_prices
from beam_caption.engine.budget import Reservation, SpendCap
from beam_caption.engine.progress import Progress

PRICE = load_prices()["gpt-5.4-nano"]


def test_worst_case_is_prompt_plus_the_whole_output_cap() -> None:
    # gpt-5.4-nano: $0.20 in, $1.25 out per million tokens.
    assert SpendCap.worst_case_usd(PRICE, 1000, 60) == pytest.approx((1000 * 0.20 + 60 * 1.25)
                                                                     / 1e6)
    assert SpendCap.worst_case_usd(None, 10_000, 1000) == 0.0, "no price: nothing to reserve"


def test_reservations_refuse_what_would_pass_the_share() -> None:
    cap = SpendCap(1.0)
    first = cap.try_reserve(0.6)
    assert first is not None
    assert cap.try_reserve(0.5) is None, "0.6 reserved + 0.5 > 1.0"
    asyncio.run(cap.settle(first, 0.2))  # the answer cost less than its worst case
    assert cap.spent_usd == pytest.approx(0.2)
    assert cap.try_reserve(0.5) is not None
    assert cap.try_reserve(0.31) is None


def test_a_cap_of_exactly_one_requests_worst_case_admits_it() -> None:
    worst = SpendCap.worst_case_usd(PRICE, 488, 60)  # $0.0001726, 172600.00000000003 nano
    cap = SpendCap(0.0001726)
    assert worst == pytest.approx(0.0001726)
    assert cap.try_reserve(worst) is not None
    assert cap.try_reserve(1e-9) is None, "and not a nano-dollar more"
    assert SpendCap(0.0001725).try_reserve(worst) is None


def test_no_cap_counts_but_never_refuses() -> None:
    cap = SpendCap(None)
    reservations = [cap.try_reserve(10.0) for _ in range(5)]
    assert None not in reservations
    asyncio.run(cap.settle(reservations[0], 3.0))
    assert cap.spent_usd == 3.0 and cap.outstanding == 4


def test_settling_everything_leaves_exactly_nothing_reserved() -> None:
    # The issue-13 hang: with float dollars, reserving and settling the same worst cases left a
    # residue (~1e-20) that looked like a request in flight, and the last waiter waited forever.
    cap = SpendCap(0.001)
    worst = SpendCap.worst_case_usd(PRICE, 504, 60)  # 0.0001758, not exact in binary
    taken = []
    while (reservation := cap.try_reserve(worst)) is not None:
        taken.append(reservation)
    assert len(taken) == 5  # 5 x 0.0001758 <= 0.001 < 6 x

    async def settle_all() -> None:
        for reservation in taken:
            await cap.settle(reservation, 0.0001151)

    asyncio.run(settle_all())
    assert cap.outstanding == 0 and cap.reserved_usd == 0.0


def test_a_waiter_gets_room_when_others_settle_and_spent_when_none_are_left() -> None:
    async def scenario() -> list[object]:
        cap = SpendCap(0.001)
        worst = 0.0004
        held = [cap.try_reserve(worst), cap.try_reserve(worst)]  # 0.0008 of 0.001 in flight
        waiter = asyncio.create_task(cap.reserve(worst, lambda: False))
        await asyncio.sleep(0.01)
        assert not waiter.done(), "0.0004 more does not fit while 0.0008 is in flight"
        await cap.settle(held[0], 0.0001)  # spent 0.0001, 0.0004 in flight: 0.0004 fits
        got = await asyncio.wait_for(waiter, 1)
        await cap.settle(held[1], 0.0004)
        await cap.settle(got, 0.0004)  # spent 0.0009: nothing in flight, 0.0004 cannot fit
        last = await asyncio.wait_for(cap.reserve(worst, lambda: False), 1)
        return [got, last]

    got, last = asyncio.run(scenario())
    assert isinstance(got, int)
    assert last is Reservation.SPENT


def test_a_waiter_ends_when_the_run_stops() -> None:
    async def scenario() -> object:
        cap = SpendCap(0.001)
        cap.try_reserve(0.001)
        stopped = [False]
        waiter = asyncio.create_task(cap.reserve(0.0001, lambda: stopped[0]))
        await asyncio.sleep(0.01)
        stopped[0] = True
        await cap.wake()
        return await asyncio.wait_for(waiter, 1)

    assert asyncio.run(scenario()) is Reservation.STOPPED


def test_progress_logs_at_most_once_per_interval_and_projects_cost(caplog) -> None:
    now = [100.0]
    progress = Progress(10.0, expected_images=1000, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="beam_caption.engine.progress")
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
    from beam_caption.cli.live import progress_line, read_snapshots

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
    line = progress_line(totals, expected=10, elapsed_s=5.0)
    assert line == "5/10 images, 1.0/s, 1 errors, 40 tokens, $2.0000, ETA 0m05s"


def test_waits_are_reported_as_whole_throttling_seconds_for_the_autoscaler() -> None:
    from beam_caption.engine import metrics as m
    collector = m.MetricsCollector()
    collector.inc(m.GLOBAL_LIMIT_WAIT_MS, 700)
    collector.inc(m.BACKOFF_MS, 600)
    counters, _, _ = collector.drain()
    assert counters[m.THROTTLING_SECONDS] == 1 and counters[m.GLOBAL_LIMIT_WAIT_MS] == 700
    collector.inc(m.BACKOFF_MS, 800)  # 300 ms carried + 800 ms
    counters, _, _ = collector.drain()
    assert counters[m.THROTTLING_SECONDS] == 1
    counters, _, _ = collector.drain()
    assert m.THROTTLING_SECONDS not in counters
