"""--concurrency auto: the in-flight window sized from the measured feed rate and latency
(engine/window.py), and how the AIMD limit follows a resize (engine/buckets.py)."""

from __future__ import annotations

import math

import pytest

from beam_caption.engine.buckets import RECOVERY_S, AdaptiveConcurrency
from beam_caption.engine.settings import LimitsConfig
from beam_caption.engine.window import AUTO_MAX, AUTO_MIN, HEADROOM, WindowSizer


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
