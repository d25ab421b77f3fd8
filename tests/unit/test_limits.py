"""Backoff (api/retry.py), token buckets and AIMD (engine/buckets.py), on an injected clock."""

from __future__ import annotations

import math
import random

import pytest

from beam_caption.api.retry import backoff_delay
from beam_caption.engine.buckets import AdaptiveConcurrency, TokenBucket


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward (or back, for the clock-step test)."""
        self.now += seconds


# -- backoff_delay ------------------------------------------------------------------------------

def test_backoff_sequence_pinned_with_seeded_rng() -> None:
    rng = random.Random(7).random
    delays = [backoff_delay(attempt, rng=rng) for attempt in range(1, 10)]
    # rng() * min(60, 0.5 * 2 ** (attempt - 1)): windows 0.5, 1, 2, 4, 8, 16, 32, 60, 60
    assert delays == pytest.approx([0.161916, 0.150849, 1.301869, 0.289745, 4.287056, 5.851023,
                                    1.855966, 30.446144, 2.24974], abs=1e-6)


def test_backoff_full_jitter_stays_in_window() -> None:
    rng = random.Random(1).random
    for attempt in range(1, 12):
        window = min(10.0, 0.25 * 2 ** (attempt - 1))
        delays = [backoff_delay(attempt, base=0.25, cap=10.0, rng=rng) for _ in range(200)]
        assert all(0.0 <= d <= window for d in delays)
        assert max(delays) > 0.8 * window  # the jitter covers the whole window


def test_backoff_extremes_of_rng() -> None:
    assert backoff_delay(3, rng=lambda: 0.0) == 0.0
    assert backoff_delay(3, rng=lambda: 1.0) == 2.0
    assert backoff_delay(50, rng=lambda: 1.0) == 60.0
    assert backoff_delay(10_000, rng=lambda: 1.0) == 60.0  # no overflow for absurd attempts


def test_backoff_honours_retry_after_with_small_jitter() -> None:
    rng = random.Random(7).random
    delays = [backoff_delay(a, retry_after=2.0, rng=rng) for a in (1, 2, 3)]
    assert delays == pytest.approx([2.064767, 2.030170, 2.130187], abs=1e-6)
    assert backoff_delay(1, retry_after=2.0, rng=lambda: 0.0) == 2.0  # at least retry_after
    assert backoff_delay(1, retry_after=2.0, rng=lambda: 1.0) == pytest.approx(2.2)  # +10% max


def test_backoff_retry_after_beyond_cap_is_honoured_exactly() -> None:
    assert backoff_delay(1, retry_after=90.0, cap=60.0, rng=lambda: 1.0) == 90.0
    assert backoff_delay(1, retry_after=58.0, cap=60.0, rng=lambda: 1.0) == 60.0


@pytest.mark.parametrize("retry_after", [0.0, -1.0, math.nan, math.inf])
def test_backoff_ignores_useless_retry_after(retry_after: float) -> None:
    assert backoff_delay(2, retry_after=retry_after, rng=lambda: 0.5) == 0.5


def test_backoff_calls_rng_once() -> None:
    calls: list[int] = []

    def rng() -> float:
        calls.append(1)
        return 0.5

    backoff_delay(1, rng=rng)
    backoff_delay(1, retry_after=1.0, rng=rng)
    assert len(calls) == 2


def test_backoff_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError):
        backoff_delay(0)


# -- TokenBucket --------------------------------------------------------------------------------

def test_bucket_starts_full_and_reserves_immediately() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10.0, 5.0, clock=clock)
    assert bucket.level == 5.0
    assert [bucket.reserve(1) for _ in range(5)] == [0.0] * 5
    assert bucket.level == 0.0


def test_bucket_reservations_queue_behind_each_other() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10.0, 2.0, clock=clock)
    waits = [bucket.reserve(1) for _ in range(5)]
    assert waits == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.3])
    assert bucket.level == pytest.approx(-3.0)
    clock.advance(0.3)
    assert bucket.level == pytest.approx(0.0)
    assert bucket.reserve(1) == pytest.approx(0.1)


def test_bucket_refills_at_rate_up_to_capacity() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2.0, 4.0, clock=clock)
    bucket.reserve(4)
    clock.advance(1.0)
    assert bucket.level == pytest.approx(2.0)
    clock.advance(100.0)
    assert bucket.level == pytest.approx(4.0)  # never above capacity


def test_bucket_amount_above_capacity_waits_for_deficit() -> None:
    clock = FakeClock()
    bucket = TokenBucket(100.0, 1000.0, clock=clock)  # 6,000 tokens/min, 10 s burst
    assert bucket.reserve(2500.0) == pytest.approx(15.0)
    clock.advance(15.0)
    assert bucket.reserve(100.0) == pytest.approx(1.0)


def test_bucket_adjust_charges_and_refunds() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10.0, 100.0, clock=clock)
    bucket.reserve(80)           # estimated 80 tokens
    bucket.adjust(-30)           # usage said 50: refund 30
    assert bucket.level == pytest.approx(50.0)
    bucket.adjust(70)            # another answer cost 70 more than reserved
    assert bucket.level == pytest.approx(-20.0)
    assert bucket.reserve(10) == pytest.approx(3.0)
    bucket.adjust(-1000)         # a refund never lifts the level above capacity
    assert bucket.level == pytest.approx(100.0)


def test_bucket_tighten_lowers_but_never_raises() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10.0, 100.0, clock=clock)
    bucket.tighten(remaining=40, reset_s=6.0)
    assert bucket.level == pytest.approx(40.0)
    bucket.tighten(remaining=90, reset_s=1.0)
    assert bucket.level == pytest.approx(40.0)
    bucket.reserve(60)
    bucket.tighten(remaining=500, reset_s=0.0)
    assert bucket.level == pytest.approx(-20.0)


def test_bucket_tighten_to_zero_holds_until_reset() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10.0, 100.0, clock=clock)
    bucket.tighten(remaining=0, reset_s=2.0)
    assert bucket.reserve(1) == pytest.approx(2.1)
    clock.advance(2.1)
    assert bucket.level == pytest.approx(0.0)


@pytest.mark.parametrize("rate", [0.0, math.inf])
def test_unlimited_bucket_never_waits(rate: float) -> None:
    bucket = TokenBucket(rate, 0.0, clock=FakeClock())
    assert bucket.unlimited
    assert all(bucket.reserve(10**9) == 0.0 for _ in range(3))
    bucket.adjust(10**9)
    bucket.tighten(0, 60.0)
    assert bucket.reserve(1) == 0.0
    assert bucket.level == math.inf


def test_bucket_ignores_a_clock_stepping_back() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1.0, 10.0, clock=clock)
    bucket.reserve(10)
    clock.advance(-5.0)
    assert bucket.level == 0.0
    clock.advance(1.0)
    assert bucket.level == pytest.approx(1.0)


@pytest.mark.parametrize("rate, capacity", [(-1.0, 10.0), (math.nan, 10.0), (1.0, 0.0)])
def test_bucket_rejects_bad_arguments(rate: float, capacity: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, capacity)


# -- AdaptiveConcurrency ------------------------------------------------------------------------

def test_aimd_halves_once_per_burst() -> None:
    clock = FakeClock()
    aimd = AdaptiveConcurrency(64, clock=clock)
    assert aimd.limit == 64
    for _ in range(20):          # a burst: the 64 in flight all come back 429 at once
        aimd.on_rate_limited()
        clock.advance(0.01)
    assert aimd.limit == 32
    clock.advance(1.0)           # past the cooldown: a new burst halves again
    aimd.on_rate_limited()
    assert aimd.limit == 16


def test_aimd_burst_lasts_the_servers_retry_after() -> None:
    clock = FakeClock()
    aimd = AdaptiveConcurrency(64, clock=clock)
    aimd.on_rate_limited(retry_after=5.0)
    clock.advance(3.0)
    aimd.on_rate_limited()
    assert aimd.limit == 32
    clock.advance(2.0)
    aimd.on_rate_limited()
    assert aimd.limit == 16


def test_aimd_never_below_floor() -> None:
    clock = FakeClock()
    aimd = AdaptiveConcurrency(8, floor=3, clock=clock)
    limits = []
    for _ in range(5):
        aimd.on_rate_limited()
        limits.append(aimd.limit)
        clock.advance(1.0)
    assert limits == [4, 3, 3, 3, 3]


def test_aimd_grows_by_one_per_window_of_clean_responses() -> None:
    clock = FakeClock()
    aimd = AdaptiveConcurrency(10, clock=clock)
    aimd.on_rate_limited()
    assert aimd.limit == 5
    for _ in range(4):
        aimd.on_success()
    assert aimd.limit == 5       # default window = current limit: 5 clean responses
    aimd.on_success()
    assert aimd.limit == 6
    for _ in range(6):
        aimd.on_success()
    assert aimd.limit == 7
    for _ in range(1000):
        aimd.on_success()
    assert aimd.limit == 10      # never above the cap


def test_aimd_errors_and_429s_reset_the_clean_streak() -> None:
    clock = FakeClock()
    aimd = AdaptiveConcurrency(4, window=3, clock=clock)
    aimd.on_rate_limited()
    clock.advance(10.0)
    assert aimd.limit == 2
    for event in ("ok", "ok", "error", "ok", "ok", "ok"):
        aimd.on_success() if event == "ok" else aimd.on_error()
    assert aimd.limit == 3       # only the last three in a row counted
    aimd.on_success()
    aimd.on_success()
    aimd.on_rate_limited()       # halves 3 -> 1 and drops the streak of two
    clock.advance(10.0)
    assert aimd.limit == 1
    aimd.on_success()
    aimd.on_success()
    assert aimd.limit == 1
    aimd.on_success()
    assert aimd.limit == 2


@pytest.mark.parametrize("kwargs", [{"cap": 0}, {"cap": 4, "floor": 0}, {"cap": 4, "floor": 5},
                                    {"cap": 4, "window": 0}])
def test_aimd_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        AdaptiveConcurrency(**kwargs)
