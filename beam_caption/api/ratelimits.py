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


@dataclass(frozen=True, slots=True)
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


# LiteLLM's proxy passes every header of the provider's answer on under this prefix; it restates
# only the x-ratelimit-limit-*/remaining-* ones under their own names, so the provider's resets
# and retry-after arrive only prefixed (BerriAI/litellm issue #21553).
PROVIDER_PREFIX = "llm_provider-"


def _header(h: Mapping[str, str], name: str) -> str | None:
    """`name` as sent, else as a gateway passed it on from the provider (lower-cased `h`)."""
    value = h.get(name)
    return value if value is not None else h.get(PROVIDER_PREFIX + name)


def parse_rate_limit_headers(headers: Mapping[str, str]) -> RateLimitInfo:
    """Read `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (case-insensitive), or the
    provider's own as a LiteLLM proxy passes them on (`llm_provider-x-ratelimit-...`)."""
    h = _lower(headers)

    def reset(name: str) -> float | None:
        value = _header(h, name)
        return parse_duration(value) if value is not None else None

    return RateLimitInfo(
        limit_requests=_count(_header(h, "x-ratelimit-limit-requests")),
        remaining_requests=_count(_header(h, "x-ratelimit-remaining-requests")),
        reset_requests_s=reset("x-ratelimit-reset-requests"),
        limit_tokens=_count(_header(h, "x-ratelimit-limit-tokens")),
        remaining_tokens=_count(_header(h, "x-ratelimit-remaining-tokens")),
        reset_tokens_s=reset("x-ratelimit-reset-tokens"),
    )


_TRY_AGAIN = re.compile(r"try again in\s*((?:(?:\d+(?:\.\d*)?|\.\d+)(?:ms|us|µs|ns|h|m|s))+)",
                        re.IGNORECASE)


def retry_after_seconds(headers: Mapping[str, str], message: str | None = None,
                        now: float | None = None) -> float | None:
    """How long the server asked us to wait, in seconds, or None if it did not say.

    Precedence: `retry-after-ms`, then `retry-after` (delta seconds or an HTTP-date relative to
    `now`, default time.time()), then the provider's own as a LiteLLM proxy passes them on
    (`llm_provider-retry-after-ms`, `llm_provider-retry-after`), then a "Please try again in
    1.234s" hint in the error message. A date in the past means 0. Unreadable values fall
    through to the next source.
    """
    h = _lower(headers)
    for prefix in ("", PROVIDER_PREFIX):
        ms = _seconds(h.get(prefix + "retry-after-ms"))
        if ms is not None:
            return ms / 1000.0
        seconds = _retry_after_value(h.get(prefix + "retry-after", ""), now)
        if seconds is not None:
            return seconds
    match = _TRY_AGAIN.search(message or "")
    return parse_duration(match.group(1)) if match else None


def _retry_after_value(value: str, now: float | None) -> float | None:
    """A Retry-After value in seconds: delta seconds, or an HTTP-date (RFC 9110) from `now`."""
    value = value.strip()
    if not value:
        return None
    seconds = parse_duration(value) if value[0].isdigit() else None
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:  # "-0000" dates parse naive; HTTP dates are always UTC
            when = when.replace(tzinfo=datetime.UTC)
        at = when.timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):  # junk must not escape a parser
        return None
    return max(0.0, at - (time.time() if now is None else now))


def _until(value: str | None, now: float | None) -> float | None:
    """Seconds from `now` until an RFC 3339 time (Anthropic's reset headers); None if unreadable."""
    if not value:
        return None
    try:
        when = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def parse_anthropic_rate_limits(headers: Mapping[str, str],
                                now: float | None = None) -> RateLimitInfo:
    """Read Anthropic's `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}` headers
    (resets are RFC 3339 times, measured from `now`) into the same RateLimitInfo the engine's
    pacing reads; the input-/output-tokens variants are covered by the tokens ones."""
    h = _lower(headers)

    def get(kind: str, what: str) -> str | None:
        return _header(h, f"anthropic-ratelimit-{kind}-{what}")

    return RateLimitInfo(
        limit_requests=_count(get("requests", "limit")),
        remaining_requests=_count(get("requests", "remaining")),
        reset_requests_s=_until(get("requests", "reset"), now),
        limit_tokens=_count(get("tokens", "limit")),
        remaining_tokens=_count(get("tokens", "remaining")),
        reset_tokens_s=_until(get("tokens", "reset"), now),
    )
