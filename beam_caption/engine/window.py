"""Sizing the in-flight window from what is measured, not from a fixed number (--concurrency auto).

Little's law: to keep a process's feed of images flowing, the requests in flight must be the rate
at which its DoFn threads hand images over times the request latency. Both are measured here:

- the feed rate, from each feeding thread's time per image spent *not* waiting for a free slot
  (reading, preparing, writing rows: what the thread would do at full speed), so a window that
  is too small does not hide the rate it holds back;
- the latency, from the requests that answered; before the first answers, from the oldest
  request still waiting for one (the latency is at least that long), so the window grows while
  the first answers are on their way instead of holding at AUTO_START for a whole latency: on a
  slow endpoint (a vision model answering in seconds) that latency was a short job's longest
  stall.

The window is that product with a quarter of headroom (latency varies from request to request),
between AUTO_MIN and AUTO_MAX. The CPU (the feed) then sets the pace when requests are fast, and
enough requests wait on a slow endpoint to keep every core busy. Rate limits are not its concern:
the buckets hold a process to its share, and 429s still halve the limit (buckets.py).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

AUTO_START = 32  # the window before anything is measured
AUTO_MIN = 8
AUTO_MAX = 512
HEADROOM = 1.25
_LATENCY_WEIGHT = 0.1  # of each new latency in the running mean
_FEED_WEIGHT = 0.2  # of each new time per image in a feeder's running mean
_MIN_LATENCIES = 8  # answers seen before the first resize
_FEEDER_IDLE_S = 5.0  # a feeder not heard from for this long no longer counts


class WindowSizer:
    """Running means of the latency and of each feeder's time per image; the window they call
    for. Thread-safe: feeders report from their own threads, latencies come from the loop."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._latency_s: float | None = None
        self._latencies = 0
        self._feeders: dict[int, tuple[float, float]] = {}  # id -> (mean busy s, last seen)

    def note_latency(self, seconds: float) -> None:
        """One answered request took `seconds`."""
        with self._lock:
            self._latencies += 1
            self._latency_s = seconds if self._latency_s is None else (
                self._latency_s + _LATENCY_WEIGHT * (seconds - self._latency_s))

    def note_feed(self, feeder: int, busy_s: float) -> None:
        """Feeder `feeder` (a DoFn instance) spent `busy_s` on its last image, waits excluded."""
        busy_s = max(busy_s, 1e-4)
        with self._lock:
            mean = self._feeders.get(feeder, (busy_s, 0.0))[0]
            self._feeders[feeder] = (mean + _FEED_WEIGHT * (busy_s - mean), self._clock())

    def feed_rate(self) -> float:
        """Images per second all recent feeders hand over, at full speed."""
        now = self._clock()
        with self._lock:
            return sum(1.0 / mean for mean, seen in self._feeders.values()
                       if now - seen <= _FEEDER_IDLE_S)

    def target(self) -> int | None:
        """The window the measurements call for, or None before there are enough of them."""
        rate = self.feed_rate()
        with self._lock:
            latency, answered = self._latency_s, self._latencies
        if latency is None or answered < _MIN_LATENCIES or rate <= 0:
            return None
        return _window(rate, latency)

    def sized_by_answers(self) -> bool:
        """True once enough answers came back for `target` to size the window."""
        with self._lock:
            return self._latencies >= _MIN_LATENCIES

    def early_target(self, waited_s: float) -> int | None:
        """Before the answers size the window (fewer than _MIN_LATENCIES): the window a latency
        of at least `waited_s` (how long the oldest request in flight has waited) calls for.
        None once answers size it, or while the feed rate is unknown."""
        rate = self.feed_rate()
        with self._lock:
            latency, answered = self._latency_s, self._latencies
        if answered >= _MIN_LATENCIES or rate <= 0:
            return None
        latency = max(latency or 0.0, waited_s)
        return _window(rate, latency) if latency > 0 else None


def _window(rate: float, latency: float) -> int:
    """Little's law with headroom, between AUTO_MIN and AUTO_MAX."""
    return max(AUTO_MIN, min(AUTO_MAX, math.ceil(rate * latency * HEADROOM)))
