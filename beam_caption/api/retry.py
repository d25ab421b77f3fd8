"""The one retry policy: which failures are retried, and how long to wait before the next try.

`is_retryable` and `backoff_delay` are what the engine's attempt loop uses; `call_with_retries`
applies the same predicate and backoff to blocking calls (the Batch API client, Secret Manager),
so every request beam-caption makes is retried by exactly one layer with one set of rules.
Transport exceptions (aiohttp's, the standard library's) are turned into ApiErrors by their
caller before they reach the predicate.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from typing import TypeVar

from beam_caption.api.errors import (
    ApiError,
    AuthError,
    BadRequest,
    ContentFiltered,
    QuotaExceeded,
    RateLimited,
    ResponseError,
    ServerError,
    TransportError,
)

T = TypeVar("T")
_LOG = logging.getLogger(__name__)


def is_retryable(error: BaseException) -> bool:
    """The one retry predicate: True for failures that a later identical request may not repeat."""
    if isinstance(error, QuotaExceeded | BadRequest | AuthError | ContentFiltered):
        return False
    if isinstance(error, RateLimited | ServerError | TransportError | ResponseError):
        return True
    if isinstance(error, ApiError):
        if error.status == 429:
            return error.code != "insufficient_quota"
        return error.status in (408, 409) or (error.status or 0) >= 500
    return False


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


def call_with_retries(call: Callable[[], T], *, what: str, max_attempts: int = 6,
                      base: float = 0.5, cap: float = 60.0,
                      classify: Callable[[Exception], ApiError | None] = lambda exc: None,
                      final: Callable[[ApiError], bool] = lambda error: False,
                      sleep: Callable[[float], None] = time.sleep,
                      rng: Callable[[], float] = random.random) -> T:
    """`call()`, retried while it fails retryably (is_retryable), with backoff_delay between.

    `classify` says which ApiError a library's own exception stands for (None: not a request
    failure, raised at once); `final` marks errors the caller wants back at once although the
    predicate would retry them. The last failure is raised as it was when the attempts run out.
    `what` names the call in the log line of each retry.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return call()
        except Exception as exc:
            error = exc if isinstance(exc, ApiError) else classify(exc)
            if (error is None or not is_retryable(error) or final(error)
                    or attempt >= max_attempts):
                raise
            delay = backoff_delay(attempt, retry_after=error.retry_after, base=base, cap=cap,
                                  rng=rng)
            _LOG.warning("%s failed (%s); retrying in %.1f s", what, error, delay)
            sleep(delay)
