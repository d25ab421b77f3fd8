"""--rate-limiter: the account's --rpm/--tpm kept for the whole job by an Envoy rate-limit service.

Each request asks Beam's own `EnvoyRateLimiter` for permits before it is sent: one hit on the
descriptor {"limit": "rpm"} (with --rpm), then its estimated tokens (prompt estimate + output
cap) on {"limit": "tpm"} (with --tpm), in the --rate-limiter's domain. The service counts the
hits of every worker process, so no process needs to know how many others there are.

The token permits are estimates: the service cannot take back what an answer did not use, nor
charge what it used beyond the estimate (the local buckets' `correct_tokens` has no counterpart
there). The prompt estimate is conservative and the output cap is an upper bound, so the service
tends to count more tokens than the provider will.

`EnvoyRateLimiter.allow()` is blocking: it sleeps inside until the service's window resets, and
retries an unreachable service 5 times, 10 s apart. So it runs on a daemon thread of its own
while the engine loop keeps serving other jobs, with `block_until_allowed=False` and no retries:
one call is one request to the service (plus, when over the limit, Beam's sleep until the window
resets) and the loop here asks again. A sleeping thread cannot be interrupted, so a job does not
wait for it when its run stops: it ends at once as "not sent", and the thread finishes its sleep
alone and asks for nothing more (with no retries left, Beam returns after the sleep).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from apache_beam.io.components.rate_limiter import EnvoyRateLimiter

from beam_caption.engine import metrics as m
from beam_caption.engine.run_state import RunState
from beam_caption.engine.settings import LimiterAddress, LimitsConfig, limiter_address

_LOG = logging.getLogger(__name__)
T = TypeVar("T")

# An answer quicker than this that is not a permit did not come with Beam's sleep until the
# reset (an unknown code, or a reset already due): wait this long before asking again, so a
# confused service is not asked in a tight loop.
_RECHECK_S = 0.25
# Longer than any window a rate-limit service keeps: the race with the run's stop ends first.
_UNTIL_STOPPED_S = 24 * 3600.0


class LimiterUnavailable(Exception):
    """The rate-limit service did not answer, after Beam's own retries."""


class GlobalLimit:
    """The job-wide --rpm/--tpm permits of one engine, asked of an Envoy rate-limit service."""

    def __init__(self, limits: LimitsConfig, metrics: m.MetricsCollector) -> None:
        assert limits.rate_limiter is not None
        self.address = limiter_address(limits.rate_limiter)
        self._metrics = metrics
        # The most tokens one request may ask for: a single hit above the service's whole
        # per-minute limit could never be allowed.
        self._max_tokens = int(limits.tpm)
        self.requests = self._limiter("rpm") if limits.rpm else None
        self.tokens = self._limiter("tpm") if limits.tpm else None
        _quiet_beam_throttle_warnings()

    def _limiter(self, descriptor: str) -> EnvoyRateLimiter:
        return EnvoyRateLimiter(self.address.target, self.address.domain,
                                [{"limit": descriptor}], block_until_allowed=False, retries=0,
                                namespace=m.NAMESPACE)

    async def acquire(self, run: RunState, tokens: int) -> bool:
        """Wait for one request's permit and `tokens` tokens' permits; False if `run` stopped
        first. Raises LimiterUnavailable when the service cannot be reached."""
        for limiter, hits in ((self.requests, 1),
                              (self.tokens, max(1, min(tokens, self._max_tokens)))):
            if limiter is not None and not await self._permit(limiter, hits, run):
                return False
        return True

    async def _permit(self, limiter: EnvoyRateLimiter, hits: int, run: RunState) -> bool:
        while run.stopped is None:
            started = time.monotonic()
            try:
                allowed = await until_stopped(run, lambda: limiter.allow(hits_added=hits))
            except grpc.RpcError as exc:
                raise LimiterUnavailable(_unavailable_message(self.address, exc)) from exc
            if allowed is None:
                return False  # the run stopped while the service made us wait
            if allowed:
                return True
            waited = time.monotonic() - started
            if waited < _RECHECK_S and not await run.sleep(_RECHECK_S - waited):
                return False
            self._metrics.inc(m.GLOBAL_LIMIT_WAIT_MS, int((time.monotonic() - started) * 1000))
        return False


async def until_stopped(run: RunState, call: Callable[[], T]) -> T | None:
    """`call()` on a daemon thread of its own; its result, or None as soon as `run` stops.

    A daemon thread, not an executor: a call left sleeping when the run stops must hold up
    neither other calls nor the process's exit.
    """
    loop = asyncio.get_running_loop()
    result: asyncio.Future[T] = loop.create_future()

    def target() -> None:
        try:
            value: Any = call()
        except BaseException as exc:  # handed to the waiting job, whatever it is
            _settle_threadsafe(loop, result, None, exc)
        else:
            _settle_threadsafe(loop, result, value, None)

    threading.Thread(target=target, name="beam-caption-rate-limit", daemon=True).start()
    stop = loop.create_task(run.sleep(_UNTIL_STOPPED_S))
    try:
        await asyncio.wait((result, stop), return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
    if result.done():
        return result.result()
    result.cancel()
    return None


def _settle_threadsafe(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], value: Any,
                       exc: BaseException | None) -> None:
    def settle() -> None:
        if future.done():  # the job already left: the run stopped
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(value)

    with contextlib.suppress(RuntimeError):  # the loop closed while the call slept
        loop.call_soon_threadsafe(settle)


class _DropThrottledFor(logging.Filter):
    """Drops Beam's warning for each over-limit answer: every waiting job of every process gets
    one per window, thousands a minute on a large job. The waits are counted instead
    (global_limit_wait_ms); Beam's errors still pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False (dropped) for Beam's per-call "Throttled for" warning."""
        return not str(record.msg).startswith("[EnvoyRateLimiter] Throttled for")


_BEAM_LIMITER_LOG = logging.getLogger("apache_beam.io.components.rate_limiter")


def _quiet_beam_throttle_warnings() -> None:
    if not any(isinstance(f, _DropThrottledFor) for f in _BEAM_LIMITER_LOG.filters):
        _BEAM_LIMITER_LOG.addFilter(_DropThrottledFor())


def _unavailable_message(address: LimiterAddress, exc: grpc.RpcError) -> str:
    code = exc.code().name if isinstance(exc, grpc.Call) else type(exc).__name__
    return (f"the rate-limit service --rate-limiter {address} did not answer ({code}, after "
            "Beam's retries): nothing more is sent without the job-wide limit; check the "
            "service, then run again with --resume")
