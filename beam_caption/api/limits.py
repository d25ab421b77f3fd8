"""Rate-limit primitives: what the server says about its limits, and how we pace ourselves.

Everything is pure or driven by an injected clock and random source, and nothing here sleeps: the
engine asks how long to wait and does the waiting, so tests pin exact timings and sequences.
- the server's side: `x-ratelimit-*` headers, `retry-after-ms` / `retry-after` / message hints;
- `backoff_delay`: exponential backoff with full jitter, honouring the server's retry-after;
- `TokenBucket`: requests-per-second or tokens-per-second budget with reservations;
- `AdaptiveConcurrency`: AIMD on the number of requests in flight.
These objects are not thread-safe: each engine uses them from its one event loop.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

Clock = Callable[[], float]


@dataclass(frozen=True)
class RateLimitInfo:
    """What the `x-ratelimit-*` headers said; None where a header was absent or unreadable."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float | None = None


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(text: str) -> float | None:
    """Seconds in a Go-style duration such as "1s", "6m0s", "250ms", "1.5s" or "2h3m4.5s".

    None if unreadable. A bare number is taken as seconds, as some gateways send it.
    """
    text = (text or "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pos, seconds = 0, 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != pos:
                return None
            seconds += float(match.group(1)) * _UNIT_S[match.group(2)]
            pos = match.end()
        if pos != len(text):
            return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers keyed by lower-case name: works for plain dicts and aiohttp's CIMultiDict alike."""
    return {str(k).lower(): str(v) for k, v in headers.items()}


def _seconds(value: str | None) -> float | None:
    """A finite, non-negative number, or None."""
    try:
        number = float(value) if value is not None else math.nan
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _count(value: str | None) -> int | None:
    number = _seconds(value)
    return int(number) if number is not None else None


def parse_rate_limit_headers(headers: Mapping[str, str]) -> RateLimitInfo:
    """Read `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (case-insensitive)."""
    h = _lower(headers)

    def reset(name: str) -> float | None:
        value = h.get(name)
        return parse_duration(value) if value is not None else None

    return RateLimitInfo(
        limit_requests=_count(h.get("x-ratelimit-limit-requests")),
        remaining_requests=_count(h.get("x-ratelimit-remaining-requests")),
        reset_requests_s=reset("x-ratelimit-reset-requests"),
        limit_tokens=_count(h.get("x-ratelimit-limit-tokens")),
        remaining_tokens=_count(h.get("x-ratelimit-remaining-tokens")),
        reset_tokens_s=reset("x-ratelimit-reset-tokens"),
    )


_TRY_AGAIN = re.compile(r"try again in\s*((?:(?:\d+(?:\.\d*)?|\.\d+)(?:ms|us|µs|ns|h|m|s))+)",
                        re.IGNORECASE)


def retry_after_seconds(headers: Mapping[str, str], message: str | None = None,
                        now: float | None = None) -> float | None:
    """How long the server asked us to wait, in seconds, or None if it did not say.

    Precedence: `retry-after-ms`, then `retry-after` (delta seconds or an HTTP-date relative to
    `now`, default time.time()), then a "Please try again in 1.234s" hint in the error message.
    A date in the past means 0. Unreadable values fall through to the next source.
    """
    h = _lower(headers)
    ms = _seconds(h.get("retry-after-ms"))
    if ms is not None:
        return ms / 1000.0
    value = h.get("retry-after", "").strip()
    if value:
        seconds = parse_duration(value) if value[0].isdigit() else None
        if seconds is not None:
            return seconds
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            if when.tzinfo is None:  # "-0000" dates parse naive; HTTP dates are always UTC
                when = when.replace(tzinfo=datetime.UTC)
            return max(0.0, when.timestamp() - (time.time() if now is None else now))
    match = _TRY_AGAIN.search(message or "")
    return parse_duration(match.group(1)) if match else None


# Spread of the wait after a server-given retry-after, as a fraction of it: clients told the same
# instant would otherwise all come back together and trip the limit again.
RETRY_AFTER_JITTER = 0.1


def backoff_delay(attempt: int, *, retry_after: float | None = None, base: float = 0.5,
                  cap: float = 60.0, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry number `attempt` (1 for the first retry).

    Full jitter, `rng() * min(cap, base * 2 ** (attempt - 1))`, spreads retries of many clients
    over the whole window (AWS's "Exponential Backoff and Jitter"). When the server gave a positive
    `retry_after`, wait at least that long plus up to 10% jitter, never more than
    max(cap, retry_after). `rng` is called exactly once.
    """
    if attempt < 1:
        raise ValueError("attempt counts retries from 1")
    jitter = rng()
    if retry_after is not None and retry_after > 0 and math.isfinite(retry_after):
        return min(retry_after * (1.0 + RETRY_AFTER_JITTER * jitter), max(cap, retry_after))
    # Past 2**60 the product only overflows; the cap has long been reached.
    window = min(cap, base * 2.0 ** min(attempt - 1, 60))
    return jitter * window


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
