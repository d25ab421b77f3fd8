"""What a server says about its rate limits: the `x-ratelimit-*` headers and retry-after hints.

Pure functions (an injected `now` where time matters), used by the response parser and, through
it, the engine's pacing.
"""

from __future__ import annotations

import datetime
import email.utils
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass


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
