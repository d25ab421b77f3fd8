"""How fast one worker process sends: in-flight slots (AIMD) and the RPM/TPM token buckets.

The buckets refill at this process's share of the account's --rpm/--tpm (the static division:
the limits divided by the expected number of worker processes); with --rate-limiter a shared
service keeps the job-wide limit (engine/global_limit.py) and the buckets only keep one process
under the whole limit. The provider's x-ratelimit headers tighten them; 429s halve the number of
slots (buckets.AdaptiveConcurrency), whose cap is --concurrency N or, by default, the window
engine/window.py sizes from the measured feed rate and latency. Used on the engine's event loop
only (the sizer also takes reports from the feeding threads).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from beam_caption.api.ratelimits import RateLimitInfo
from beam_caption.engine.buckets import AdaptiveConcurrency, TokenBucket
from beam_caption.engine.settings import LimitsConfig, limiter_address
from beam_caption.engine.window import WindowSizer

if TYPE_CHECKING:
    from beam_caption.engine.run_state import RunState

_LOG = logging.getLogger(__name__)
RESIZE_EVERY_S = 0.5
# While requests wait for a slot before the first answers: how often the window may grow from
# the age of the oldest request in flight (engine/window.py).
EARLY_GROWTH_EVERY_S = 0.1


class Pacer:
    """Slots and buckets for one engine."""

    def __init__(self, limits: LimitsConfig) -> None:
        self.limits = limits
        self.concurrency = AdaptiveConcurrency(limits.start_window)
        # --concurrency auto: the window follows the measured feed rate and latency.
        self.sizer = WindowSizer() if limits.auto_window else None
        self._resized_at = 0.0
        # Tiny bursts: providers count limits over a sliding minute, and a bucket admits at most
        # its capacity on top of its rate in any window, so pacing evenly is what stays under.
        self._requests = TokenBucket(limits.rpm_per_worker / 60.0, 1.0)
        self._tokens = TokenBucket(limits.tpm_per_worker / 60.0,
                                   max(1.0, limits.tpm_per_worker / 600.0))
        self._slots: asyncio.Condition | None = None
        self.in_flight = 0
        self._waiting = 0  # jobs waiting for a slot
        # The requests on the wire, oldest first (dicts keep insertion order): when each was
        # sent (what sizes the window before the first answers) and for which run (what the
        # engine's close waits for).
        self._sent: dict[int, tuple[float, RunState | None]] = {}
        self._sent_ids = itertools.count()
        self._growth_armed = False
        if limits.rpm or limits.tpm:
            _LOG.info("%s", limits_message(limits))

    async def acquire(self, stopped: Callable[[], bool]) -> bool:
        """Wait for a free slot; False (no slot taken) if `stopped()` turns true meanwhile."""
        slots = self._condition()
        async with slots:
            if self.in_flight >= self.concurrency.limit:
                self._arm_early_growth()
            self._waiting += 1
            try:
                await slots.wait_for(lambda: stopped() or self.in_flight < self.concurrency.limit)
            except asyncio.CancelledError:
                # A wake-up meant for this waiter (release wakes one per free slot) would be
                # lost with it: pass it on.
                slots.notify(1)
                raise
            finally:
                self._waiting -= 1
            if stopped():
                return False
            self.in_flight += 1
            return True

    async def release(self) -> None:
        """Give a slot back."""
        slots = self._condition()
        async with slots:
            self.in_flight -= 1
            # One waiter per free slot (more than one when the limit grew meanwhile): waking
            # every waiter on every answer cost O(window) task steps per request.
            slots.notify(max(1, self.concurrency.limit - self.in_flight))

    def sending(self, run: RunState | None = None) -> int:
        """A request of `run` goes on the wire now; pass the returned id to `answered`."""
        sent = next(self._sent_ids)
        self._sent[sent] = (time.monotonic(), run)
        return sent

    def answered(self, sent: int) -> None:
        """The request `sending` returned `sent` for is off the wire (answered or failed)."""
        self._sent.pop(sent, None)

    def runs_on_wire(self) -> list[RunState | None]:
        """The run of each request on the wire now (None where `sending` was given none)."""
        return [run for _, run in self._sent.values()]

    def _arm_early_growth(self) -> None:
        """Look again in EARLY_GROWTH_EVERY_S whether the window should grow (auto window)."""
        if self.sizer is None or self._growth_armed:
            return
        self._growth_armed = True
        asyncio.get_running_loop().call_later(EARLY_GROWTH_EVERY_S, self._grow_early)

    def _grow_early(self) -> None:
        """Before the first answers: grow the window to what the oldest request's wait implies,
        while jobs wait for a slot (a wait this long means a latency at least this long)."""
        self._growth_armed = False
        if self.sizer is None or self.sizer.sized_by_answers():
            return  # answers size the window from now on (observe_latency)
        if self._sent:  # else every slot is held by a job waiting on the buckets or the budget
            oldest, _ = next(iter(self._sent.values()))
            target = self.sizer.early_target(time.monotonic() - oldest)
            if target is not None and target > self.concurrency.cap:
                self.concurrency.resize(target)
                self.wake()
        if self._waiting:
            self._arm_early_growth()

    def observe_latency(self, seconds: float) -> None:
        """An answer took `seconds`: resize the window (at most every RESIZE_EVERY_S) when it is
        sized from measurements. Call on the engine loop."""
        if self.sizer is None:
            return
        self.sizer.note_latency(seconds)
        now = time.monotonic()
        if now - self._resized_at < RESIZE_EVERY_S:
            return
        self._resized_at = now
        target = self.sizer.target()
        if target is not None and target != self.concurrency.cap:
            grew = target > self.concurrency.limit
            self.concurrency.resize(target)
            if grew:
                self.wake()  # jobs waiting for a slot may go now

    def wake(self) -> None:
        """Make slot waiters look again (a run stopped); call on the engine loop."""
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        slots = self._condition()
        async with slots:
            slots.notify_all()

    def reserve(self, tokens: int) -> float:
        """Debit one request and `tokens` from the buckets; seconds to wait before sending."""
        return max(self._requests.reserve(1), self._tokens.reserve(tokens))

    def correct_tokens(self, delta: int) -> None:
        """The answer used `delta` more tokens than reserved (negative: fewer)."""
        self._tokens.adjust(delta)

    def apply_server_limits(self, info: RateLimitInfo | None) -> None:
        """Tighten our buckets when the server reports less headroom than they hold."""
        if info is None:
            return
        workers = self.limits.workers
        for enabled, bucket, limit, remaining, reset in (
                (self.limits.rpm, self._requests, info.limit_requests,
                 info.remaining_requests, info.reset_requests_s),
                (self.limits.tpm, self._tokens, info.limit_tokens,
                 info.remaining_tokens, info.reset_tokens_s)):
            if enabled and remaining is not None and reset is not None and limit:
                # With nothing left, wait about one unit's share of the window, not the whole
                # reset: windows slide, and a slot frees up as soon as the oldest use expires.
                bucket.tighten(remaining / workers, reset / limit)

    def _condition(self) -> asyncio.Condition:
        if self._slots is None:
            self._slots = asyncio.Condition()  # binds to the engine loop at first use
        return self._slots


def limits_message(limits: LimitsConfig) -> str:
    """The start-up line that says how --rpm/--tpm are kept, and what that assumes."""
    used = [(name, value) for name, value in (("rpm", limits.rpm), ("tpm", limits.tpm)) if value]
    given = "the account's " + " and ".join(f"--{name} {value:g}" for name, value in used)
    if limits.rate_limiter:
        descriptors = ", ".join(f"limit={name}" for name, _ in used)
        verb = "are" if len(used) > 1 else "is"
        return (f"rate limits are global: {given} {verb} kept for the whole job by the "
                f"rate-limit service {limiter_address(limits.rate_limiter)} (descriptors "
                f"{descriptors}; token permits are estimates), not divided among worker "
                "processes")
    shares = [f"{limits.rpm_per_worker:.1f} requests/min" if limits.rpm else "",
              f"{limits.tpm_per_worker:.0f} tokens/min" if limits.tpm else ""]
    source = f", a number from {limits.workers_source}" if limits.workers_source else ""
    return (f"rate limits for this worker process: {', '.join(x for x in shares if x)}: "
            f"{given} divided by {limits.workers} expected worker processes{source}. This "
            f"assumes at most {limits.workers} processes send at once; more would exceed the "
            "account's limits together (--rate-limiter keeps one job-wide limit instead)")
