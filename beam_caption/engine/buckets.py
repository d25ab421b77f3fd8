"""How the engine paces itself: token buckets for requests and tokens per second, and AIMD on
the number of requests in flight.

Driven by an injected clock, and nothing here sleeps: the engine asks how long to wait and does
the waiting, so tests pin exact timings. Not thread-safe: each engine uses them from its one loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

Clock = Callable[[], float]


def _unlimited(rate: float) -> bool:
    return rate == 0 or math.isinf(rate)


class TokenBucket:
    """A budget of `rate_per_s` units per second, holding at most `capacity` (the burst).

    `reserve` debits at once and tells the caller how long to wait, so the level may go negative:
    later callers queue behind earlier reservations. A rate of 0 or infinity means unlimited.
    """

    def __init__(self, rate_per_s: float, capacity: float, clock: Clock = time.monotonic) -> None:
        if rate_per_s < 0 or math.isnan(rate_per_s):
            raise ValueError("rate_per_s must be >= 0 (0 or inf = unlimited)")
        if not _unlimited(rate_per_s) and not capacity > 0:
            raise ValueError("capacity must be > 0")
        self.rate_per_s = rate_per_s
        self.capacity = capacity
        self._clock = clock
        self._level = math.inf if _unlimited(rate_per_s) else float(capacity)
        self._last = clock()

    @property
    def unlimited(self) -> bool:
        """True when the bucket never makes anyone wait."""
        return _unlimited(self.rate_per_s)

    def _refill(self) -> None:
        now = self._clock()
        if not self.unlimited:
            elapsed = max(0.0, now - self._last)  # a clock that steps back adds nothing
            self._level = min(self.capacity, self._level + elapsed * self.rate_per_s)
        self._last = now

    @property
    def level(self) -> float:
        """Units available now; negative while reservations are waiting for refill."""
        self._refill()
        return self._level

    def reserve(self, amount: float) -> float:
        """Debit `amount` now; return the seconds to wait before using it (0 if available).

        An amount above the capacity is allowed: it waits until the deficit has refilled.
        """
        if self.unlimited:
            return 0.0
        self._refill()
        self._level -= amount
        return 0.0 if self._level >= 0 else -self._level / self.rate_per_s

    def adjust(self, delta: float) -> None:
        """Correct a past reservation once the real cost is known: + charges more, - refunds."""
        if self.unlimited:
            return
        self._refill()
        self._level = min(self.capacity, self._level - delta)

    def tighten(self, remaining: float, reset_s: float) -> None:
        """The server says `remaining` units are left and its window resets in `reset_s` seconds.

        The level drops to `remaining` if ours is higher; it is never raised (the server may not
        count our requests still in flight yet). With nothing left, the bucket also holds until
        the reset: the level becomes a debt that takes `reset_s` to repay. The caller passes this
        worker's share of a server-wide `remaining`.
        """
        if self.unlimited:
            return
        self._refill()
        target = remaining if remaining > 0 else -max(0.0, reset_s) * self.rate_per_s
        self._level = min(self._level, target)


# After a 429 burst the limit is left to climb back by itself for this long before a resize
# may lift it again.
RECOVERY_S = 30.0


class AdaptiveConcurrency:
    """Additive-increase, multiplicative-decrease limit on requests in flight.

    Starts at `cap`; halves on a burst of 429s (never below `floor`); grows by one after `window`
    consecutive clean responses (default: the current limit, i.e. about one round of requests),
    never above `cap`.
    """

    def __init__(self, cap: int, *, floor: int = 1, window: int | None = None,
                 clock: Clock = time.monotonic, cooldown_s: float = 1.0) -> None:
        if cap < 1 or not 1 <= floor <= cap:
            raise ValueError("need 1 <= floor <= cap")
        if window is not None and window < 1:
            raise ValueError("window must be >= 1")
        self.cap = cap
        self.floor = floor
        self.window = window
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._limit = cap
        self._streak = 0
        self._burst_until = -math.inf

    @property
    def limit(self) -> int:
        """How many requests may be in flight now."""
        return self._limit

    def resize(self, cap: int) -> None:
        """A new cap (the window sized from measurements, engine/window.py). The limit follows
        it at once, except within RECOVERY_S of a 429 burst: it then climbs back one at a time
        as after any burst (and never above the new cap)."""
        self.cap = max(self.floor, cap)
        recovered = self._clock() >= self._burst_until + RECOVERY_S
        self._limit = self.cap if recovered else min(self._limit, self.cap)

    def on_success(self) -> None:
        """A clean response: count it toward the next increase."""
        self._streak += 1
        if self._streak >= (self.window or self._limit):
            self._streak = 0
            self._limit = min(self.cap, self._limit + 1)

    def on_rate_limited(self, retry_after: float | None = None) -> None:
        """A 429: halve, unless this one belongs to the burst that already halved the limit.

        Requests in flight when the first 429 came back were sent under the old limit, so their
        429s arrive together; counting each would collapse the limit to the floor. A burst lasts
        `cooldown_s`, or the server's `retry_after` if longer.
        """
        self._streak = 0
        now = self._clock()
        if now < self._burst_until:
            return
        self._limit = max(self.floor, self._limit // 2)
        self._burst_until = now + max(self.cooldown_s, retry_after or 0.0)

    def on_error(self) -> None:
        """Another retryable failure: no change to the limit, but the clean streak starts over."""
        self._streak = 0
