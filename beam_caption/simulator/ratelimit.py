"""Requests-per-minute and tokens-per-minute limits over a sliding window, and their headers.

A request is admitted when both windows have room for it (1 request; its prompt tokens plus its
max completion tokens, or its actual completion when it sets no maximum, which is how OpenAI
counts a request against TPM). Rejected requests consume nothing. The retry hint is the exact
time until enough of the window has expired for this request to fit.
"""

from __future__ import annotations

import math
from collections import deque

from beam_caption.simulator.apierror import SimError

# Reported as the limit when a budget is off, so clients that read the headers see plenty.
UNLIMITED = 1_000_000_000


def go_duration(seconds: float) -> str:
    """Format like OpenAI's reset headers (Go durations): 0s, 120ms, 1.5s, 6m0s, 1h0m0s.

    Rounded up to whole milliseconds: a retry hint must never send a client back too early.
    """
    if seconds <= 0:
        return "0s"
    ms = math.ceil(seconds * 1000 - 1e-6)
    if ms < 1000:
        return f"{max(ms, 1)}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    text = f"{rest / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    if minutes:
        return f"{minutes}m{text}"
    return text


class SlidingWindow:
    """Amounts admitted in the last `window` seconds, against a `limit` (0 = unlimited)."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._entries: deque[tuple[float, int]] = deque()
        self._total = 0

    def _expire(self, now: float) -> None:
        horizon = now - self.window
        while self._entries and self._entries[0][0] <= horizon:
            self._total -= self._entries.popleft()[1]

    def wait_for(self, now: float, amount: int) -> float:
        """Seconds until `amount` fits (0 if it fits now, inf if it never can)."""
        if not self.limit:
            return 0.0
        if amount > self.limit:
            return math.inf
        self._expire(now)
        excess = self._total + amount - self.limit
        if excess <= 0:
            return 0.0
        for stamp, used in self._entries:
            excess -= used
            if excess <= 0:
                return stamp + self.window - now
        return self.window  # unreachable: the whole window expiring always makes room

    def add(self, now: float, amount: int) -> None:
        """Record an admitted amount."""
        if self.limit:
            self._entries.append((now, amount))
            self._total += amount

    def remaining(self, now: float) -> int:
        """What is left of the limit in the current window."""
        if not self.limit:
            return UNLIMITED
        self._expire(now)
        return max(0, self.limit - self._total)

    def reset_after(self, now: float) -> float:
        """Seconds until the window is back to its full limit (everything in it has expired)."""
        if not self.limit or not self._entries:
            return 0.0
        return max(0.0, self._entries[-1][0] + self.window - now)


class RateLimiter:
    """The pair of windows (requests, tokens) for one server."""

    def __init__(self, rpm: int, tpm: int, window: float) -> None:
        self.requests = SlidingWindow(rpm, window)
        self.tokens = SlidingWindow(tpm, window)

    def reconfigure(self, rpm: int, tpm: int, window: float) -> None:
        """Apply new limits at runtime, keeping what the windows hold."""
        for win, limit in ((self.requests, rpm), (self.tokens, tpm)):
            win.limit, win.window = limit, window

    def admit(self, now: float, tokens: int, model: str) -> None:
        """Record one request of `tokens`, or raise the 429 the API would send."""
        for win, kind, unit, amount in ((self.requests, "requests", "RPM", 1),
                                        (self.tokens, "tokens", "TPM", tokens)):
            wait = win.wait_for(now, amount)
            if wait == 0:
                continue
            if math.isinf(wait):
                raise SimError(429, f"Request too large for {model} in organization org-sim on "
                               f"{kind} per min ({unit}): Limit {win.limit}, Requested {amount}. "
                               "The input or output tokens must be reduced in order to run "
                               "successfully.", type=kind, code="rate_limit_exceeded",
                               outcome="rate_limited")
            raise rate_limited(wait, f"Rate limit reached for {model} in organization org-sim "
                               f"on {kind} per min ({unit}): Limit {win.limit}, Used "
                               f"{win.limit - win.remaining(now)}, Requested {amount}.", kind)
        self.requests.add(now, 1)
        self.tokens.add(now, tokens)

    def headers(self, now: float) -> dict[str, str]:
        """The six x-ratelimit-* headers every response carries."""
        out: dict[str, str] = {}
        for win, kind in ((self.requests, "requests"), (self.tokens, "tokens")):
            out[f"x-ratelimit-limit-{kind}"] = str(win.limit or UNLIMITED)
            out[f"x-ratelimit-remaining-{kind}"] = str(win.remaining(now))
            out[f"x-ratelimit-reset-{kind}"] = go_duration(win.reset_after(now))
        return out


def rate_limited(wait: float, prefix: str, kind: str = "requests") -> SimError:
    """A retryable 429 that says when to retry, in the message and in both retry headers."""
    return SimError(429, f"{prefix} Please try again in {go_duration(wait)}. Visit "
                    "https://platform.openai.com/account/rate-limits to learn more.",
                    type=kind, code="rate_limit_exceeded", outcome="rate_limited",
                    headers={"retry-after-ms": str(max(1, math.ceil(wait * 1000))),
                             "retry-after": str(max(1, math.ceil(wait)))})
