"""--concurrency auto: the in-flight window sized from the measured feed rate and latency
(engine/window.py), and how the AIMD limit follows a resize (engine/buckets.py)."""

from __future__ import annotations

import asyncio
import contextlib
import math

import pytest

from beam_caption.engine.buckets import RECOVERY_S, AdaptiveConcurrency
from beam_caption.engine.pacing import Pacer
from beam_caption.engine.settings import LimitsConfig
from beam_caption.engine.window import AUTO_MAX, AUTO_MIN, AUTO_START, HEADROOM, WindowSizer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _sizer(latency_s: float, busy_s: dict[int, float], clock: Clock | None = None) -> WindowSizer:
    sizer = WindowSizer(clock or Clock())
    for _ in range(20):
        sizer.note_latency(latency_s)
        for feeder, busy in busy_s.items():
            sizer.note_feed(feeder, busy)
    return sizer


def test_nothing_is_sized_before_eight_answers_and_a_feed() -> None:
    sizer = WindowSizer(Clock())
    for _ in range(7):
        sizer.note_latency(1.0)
    sizer.note_feed(1, 0.01)
    assert sizer.target() is None
    sizer.note_latency(1.0)
    assert sizer.target() == math.ceil(100 * 1.0 * HEADROOM)
    assert WindowSizer(Clock()).target() is None


@pytest.mark.parametrize(("latency", "busy", "window"), [
    (0.2, {1: 0.01}, math.ceil(100 * 0.2 * HEADROOM)),  # one thread at 100 images/s
    (1.0, {1: 0.01, 2: 0.01}, math.ceil(200 * 1.0 * HEADROOM)),  # two feeders add up
    (0.05, {1: 0.02}, AUTO_MIN),  # a fast endpoint: never below the floor
    (30.0, {1: 0.004}, AUTO_MAX),  # a very slow one: never above the cap
])
def test_the_window_is_feed_rate_times_latency_with_headroom(latency, busy, window) -> None:
    assert _sizer(latency, busy).target() == window


def test_a_feeder_that_went_quiet_stops_counting() -> None:
    clock = Clock()
    sizer = _sizer(1.0, {1: 0.01, 2: 0.01}, clock)
    clock.now += 6.0
    sizer.note_feed(1, 0.01)
    assert sizer.feed_rate() == pytest.approx(100.0)


def test_running_means_follow_a_change_without_jumping() -> None:
    sizer = _sizer(0.2, {1: 0.01})
    sizer.note_latency(2.0)  # one slow answer moves the mean a tenth of the way
    assert sizer.target() == math.ceil(100 * (0.2 + 0.1 * 1.8) * HEADROOM)


def test_a_resize_lifts_the_limit_at_once_but_not_right_after_a_429_burst() -> None:
    clock = Clock()
    window = AdaptiveConcurrency(32, clock=clock)
    window.resize(200)
    assert (window.cap, window.limit) == (200, 200)
    window.on_rate_limited()
    assert window.limit == 100
    window.resize(300)
    assert (window.cap, window.limit) == (300, 100), "the burst's halving stands"
    window.resize(50)
    assert window.limit == 50, "a smaller window lowers the limit at once"
    clock.now += RECOVERY_S + 1.1
    window.resize(300)
    assert window.limit == 300


def test_concurrency_zero_is_auto_and_a_number_is_fixed() -> None:
    auto, fixed = LimitsConfig(), LimitsConfig(concurrency=16)
    assert (auto.auto_window, auto.start_window, auto.max_window) == (True, 32, AUTO_MAX)
    assert (fixed.auto_window, fixed.start_window, fixed.max_window) == (False, 16, 16)


def test_before_enough_answers_the_oldest_wait_is_a_lower_bound_on_the_latency() -> None:
    sizer = WindowSizer(Clock())
    sizer.note_feed(1, 0.01)  # 100 images/s
    assert sizer.early_target(0.0) is None, "nothing waited yet: nothing to go on"
    assert sizer.early_target(0.5) == math.ceil(100 * 0.5 * HEADROOM)
    sizer.note_latency(2.0)  # one answer so far: the longer of the two counts
    assert sizer.early_target(0.5) == math.ceil(100 * 2.0 * HEADROOM)
    for _ in range(7):
        sizer.note_latency(2.0)
    assert sizer.early_target(5.0) is None, "eight answers: they size the window from now on"


def _pacer() -> Pacer:
    pacer = Pacer(LimitsConfig())  # --concurrency auto
    assert pacer.sizer is not None
    pacer.sizer.note_feed(1, 0.01)  # one feeder at 100 images/s
    return pacer


def test_the_window_grows_while_the_first_answers_are_on_their_way() -> None:
    async def scenario() -> tuple[bool, int]:
        pacer = Pacer(LimitsConfig())
        assert pacer.sizer is not None
        # 20 images/s: the wait must pass 1.28 s before it calls for more than 32, so a loaded
        # machine's late wake-up does not hide the first blocked moment.
        pacer.sizer.note_feed(1, 0.05)
        for _ in range(AUTO_START):  # the starting window, all on the wire, none answered
            assert await pacer.acquire(lambda: False)
            pacer.sending()
        waiter = asyncio.ensure_future(pacer.acquire(lambda: False))
        await asyncio.sleep(0.05)
        blocked_at_start = not waiter.done()
        # No answer comes back; the oldest request's wait alone lifts the window.
        assert await asyncio.wait_for(waiter, timeout=10)
        return blocked_at_start, pacer.concurrency.limit

    blocked, window = asyncio.run(scenario())
    assert blocked, "the 33rd request waited for a slot at first"
    assert window > AUTO_START


def test_a_fixed_window_never_grows_from_waiting() -> None:
    async def scenario() -> bool:
        pacer = Pacer(LimitsConfig(concurrency=4))
        for _ in range(4):
            assert await pacer.acquire(lambda: False)
            pacer.sending()
        waiter = asyncio.ensure_future(pacer.acquire(lambda: False))
        await asyncio.sleep(0.5)
        still_waiting = not waiter.done()
        waiter.cancel()
        return still_waiting and pacer.concurrency.limit == 4

    assert asyncio.run(scenario())


def test_a_release_wakes_one_waiter_per_free_slot() -> None:
    async def scenario() -> list[int]:
        pacer = Pacer(LimitsConfig(concurrency=2))
        granted: list[int] = []

        async def job(n: int) -> None:
            assert await pacer.acquire(lambda: False)
            granted.append(n)

        for n in range(2):
            await job(n)
        waiters = [asyncio.ensure_future(job(n)) for n in range(2, 8)]
        await asyncio.sleep(0.01)
        counts = [len(granted)]
        await pacer.release()  # one slot free: one waiter goes
        await asyncio.sleep(0.01)
        counts.append(len(granted))
        pacer.concurrency.resize(4)  # the limit grew by two meanwhile, nobody told
        await pacer.release()  # three slots free now: three waiters go
        await asyncio.sleep(0.01)
        counts += [len(granted), pacer.in_flight]
        for waiter in waiters:
            waiter.cancel()
        return counts

    # 2 at first, 1 more, then 3 more: the window (4) is full again and two still wait.
    assert asyncio.run(scenario()) == [2, 3, 6, 4]


def test_a_cancelled_waiter_passes_its_wake_up_on() -> None:
    async def scenario() -> bool:
        pacer = Pacer(LimitsConfig(concurrency=1))
        assert await pacer.acquire(lambda: False)
        first = asyncio.ensure_future(pacer.acquire(lambda: False))
        second = asyncio.ensure_future(pacer.acquire(lambda: False))
        await asyncio.sleep(0.01)
        await pacer.release()  # wakes `first` ...
        first.cancel()  # ... which is cancelled before it runs
        with contextlib.suppress(asyncio.CancelledError):
            await first
        return await asyncio.wait_for(second, timeout=5)

    assert asyncio.run(scenario()), "the free slot went to the next waiter"


def test_a_hung_endpoint_grows_the_window_no_further_than_its_cap() -> None:
    sizer = WindowSizer(Clock())
    sizer.note_feed(1, 0.001)  # a fast feed: 1,000 images/s
    assert sizer.early_target(600.0) == AUTO_MAX


def test_waiting_does_not_lift_the_limit_a_429_burst_halved() -> None:
    async def scenario() -> tuple[int, int]:
        pacer = _pacer()
        pacer.concurrency.on_rate_limited()  # 32 -> 16 for the recovery period
        for _ in range(16):
            assert await pacer.acquire(lambda: False)
            pacer.sending()
        waiter = asyncio.ensure_future(pacer.acquire(lambda: False))
        await asyncio.sleep(0.6)  # the oldest request has waited long enough to grow the cap
        waiter.cancel()
        return pacer.concurrency.cap, pacer.concurrency.limit

    cap, limit = asyncio.run(scenario())
    assert cap > AUTO_START, "the measured wait still sizes the cap"
    assert limit == AUTO_START // 2, "but the halved limit climbs back only by itself"


def test_the_window_still_grows_when_the_feed_is_measured_after_the_first_look() -> None:
    async def scenario() -> int:
        pacer = Pacer(LimitsConfig())  # no feed reported yet
        for _ in range(AUTO_START):
            assert await pacer.acquire(lambda: False)
            pacer.sending()
        waiter = asyncio.ensure_future(pacer.acquire(lambda: False))
        await asyncio.sleep(0.3)  # looked at least twice with nothing to size from
        assert not waiter.done()
        assert pacer.sizer is not None
        pacer.sizer.note_feed(1, 0.01)
        assert await asyncio.wait_for(waiter, timeout=10)
        return pacer.concurrency.limit

    assert asyncio.run(scenario()) > AUTO_START
