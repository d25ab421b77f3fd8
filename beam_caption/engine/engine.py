"""The per-process AsyncEngine: one event loop, one aiohttp session, one pacer per endpoint.

Every CaptionImages DoFn in a worker process that talks to the same endpoint with the same limits
shares one engine (engine/registry.py). The engine owns only the transport and the pacing; each
job carries its own request body, price and run (run_state.RunState: spend share, stop, answer
memory). So two CaptionImages with different prompts, schemas or output caps in one pipeline each
send their own requests and pay at their own price.

A job runs on the engine loop: answer memory -> attempt loop (slot -> buckets -> the job-wide
limit with --rate-limiter -> spend reservation -> POST -> parse) -> retry or finish. Exactly
one retry layer lives here, decided by api/retry.py; a job is retried only while it has no
parsed answer, so an answer is never paid for twice.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
import time
from collections.abc import Callable
from typing import TypeVar

import aiohttp

from beam_caption.api.errors import ApiError, QuotaExceeded, RateLimited
from beam_caption.api.response import ChatResult
from beam_caption.api.retry import backoff_delay, is_retryable
from beam_caption.cost.pricing import cost_usd, format_usd
from beam_caption.engine import metrics as m
from beam_caption.engine.budget import Reservation, SpendCap
from beam_caption.engine.global_limit import GlobalLimit, LimiterUnavailable
from beam_caption.engine.jobs import CaptionJob, CaptionOutcome
from beam_caption.engine.loop import LoopThread
from beam_caption.engine.pacing import Pacer
from beam_caption.engine.run_state import RunState
from beam_caption.engine.settings import EndpointConfig, LimitsConfig
from beam_caption.engine.stop import StopReason
from beam_caption.engine.transport import Transport, as_api_error

T = TypeVar("T")
# The longest a closing engine waits for the requests on the wire (a failed bundle's).
DRAIN_S = 60.0


class _NotSent(Exception):
    """The run stopped (or the budget ran out) before this attempt was sent."""


class AsyncEngine:
    """Sends one provider's requests (api/providers/) for one worker process within its share
    of the limits."""

    def __init__(self, endpoint: EndpointConfig, limits: LimitsConfig, loop_thread: LoopThread,
                 api_key: str | None) -> None:
        self.endpoint = endpoint
        self.limits = limits
        self.metrics = m.MetricsCollector()
        self.pacer = Pacer(limits)
        self.global_limit = GlobalLimit(limits, self.metrics) if limits.rate_limiter else None
        self.transport = Transport(endpoint, limits.max_window, api_key)
        self._parse = endpoint.adapter.parse_response  # the provider's sans-I/O parser
        self._loop_thread = loop_thread
        self._rng = random.Random()
        self._closing = False

    def open(self) -> None:
        """Create the session on the engine's loop (called once, from the registry)."""
        self._loop_thread.run(self.transport.open(), timeout=30)

    def close(self) -> None:
        """Close the session once the requests on the wire came back, for at most DRAIN_S; jobs
        still running then are cancelled, and none is sent meanwhile.

        The last DoFn leaves after its bundles, which end with nothing in flight, except a
        failed bundle: its requests are paid, so their answers must reach `finish` (the row and
        the journal) before the session goes. An abandoned run's requests are not waited for.
        """
        self._closing = True
        self._loop_thread.run(self._drain_and_close(), timeout=DRAIN_S + 30)

    async def _drain_and_close(self) -> None:
        deadline = time.monotonic() + min(DRAIN_S, self.endpoint.request_timeout_s)
        while (any(run is not None and not run.abandoned for run in self.pacer.runs_on_wire())
               and time.monotonic() < deadline):
            await asyncio.sleep(0.05)
        await self.transport.close()

    # -- feeding -----------------------------------------------------------------------------
    def note_feed(self, feeder: int, busy_s: float) -> None:
        """A feeding DoFn (`feeder`, any thread) spent `busy_s` on its last image, waits for a
        slot excluded: what sizes the window (engine/window.py)."""
        if self.pacer.sizer is not None:
            self.pacer.sizer.note_feed(feeder, busy_s)

    def window(self) -> int:
        """Requests this process may have in flight now."""
        return self.pacer.concurrency.limit

    # -- submission ------------------------------------------------------------------------
    def submit(self, job: CaptionJob, finish: Callable[[CaptionOutcome], T]
               ) -> concurrent.futures.Future[T]:
        """Schedule `job` on the engine's loop (callable from any thread). `finish(outcome)` runs
        on the loop as soon as the job ends, before the future completes: the caller persists
        an answer there, whatever becomes of the thread that waits for the future."""
        job.run.add_waker(self.pacer.wake)
        return self._loop_thread.submit(self._finished(job, finish))

    async def _finished(self, job: CaptionJob, finish: Callable[[CaptionOutcome], T]) -> T:
        return finish(await self._counted(job))

    async def _counted(self, job: CaptionJob) -> CaptionOutcome:
        if job.dedupe:
            outcome = await job.run.answers.answer(job.key, job.uri, lambda: self._run(job),
                                                   job.source_id)
        else:
            outcome = await self._run(job)
        fresh = not (outcome.redelivered or outcome.shared_from)
        if outcome.redelivered:
            self.metrics.inc(m.REDELIVERED)
        elif outcome.shared_from:
            self.metrics.inc(m.DEDUPLICATED)
        result = outcome.result
        usage = result.usage if result is not None else None
        job.run.progress.record(ok=result is not None,
                                tokens=usage.total_tokens if usage and fresh else 0,
                                cost_usd=(outcome.cost_usd or 0.0) if fresh else 0.0)
        return outcome

    async def _run(self, job: CaptionJob) -> CaptionOutcome:
        """Attempt `job` until it has an answer, a permanent error, or no attempts left."""
        run = job.run
        deadline = time.monotonic() + self.limits.retry_deadline_s
        attempt = 0
        while True:
            if run.stopped is not None:
                return CaptionOutcome(attempts=attempt, stopped=run.stopped)
            attempt += 1
            try:
                result, latency_ms, cost = await self._attempt(job)
            except _NotSent:
                return CaptionOutcome(attempts=attempt - 1, stopped=run.stopped)
            except (TimeoutError, ApiError, aiohttp.ClientError) as exc:
                if run.abandoned and run.stopped is not None:
                    return CaptionOutcome(attempts=attempt, stopped=run.stopped, abandoned=True)
                error = as_api_error(exc) or ApiError(
                    f"request failed: {type(exc).__name__}", code="request_failed")
                delay = self._retry_delay(error, attempt, deadline)
                if delay is None:
                    return self._final_failure(job, error, attempt)
                self.metrics.inc(m.RETRIES)
                self.metrics.inc(f"retries_{error.row_code}")
                self.metrics.inc(m.BACKOFF_MS, int(delay * 1000))
                if not await run.sleep(delay):
                    return CaptionOutcome(attempts=attempt, stopped=run.stopped)
                continue
            run.failures.success()
            self.pacer.concurrency.on_success()
            self.metrics.inc(m.REQUESTS_OK)
            self.metrics.inc(m.TOKENS_IN, result.usage.prompt_tokens)
            self.metrics.inc(m.TOKENS_OUT, result.usage.completion_tokens)
            return CaptionOutcome(result=result, attempts=attempt, latency_ms=latency_ms,
                                  cost_usd=cost)

    def _final_failure(self, job: CaptionJob, error: ApiError, attempts: int) -> CaptionOutcome:
        reason = job.run.failures.failure(error)
        if reason is not None:
            self._stop(job.run, reason)
        return CaptionOutcome(error=error, attempts=attempts,
                              cost_usd=cost_usd(job.price, error.usage))

    def _stop(self, run: RunState, reason: StopReason) -> None:
        if run.stopped is None:
            self.metrics.inc(m.RUN_STOPPED)
        run.stop(reason)

    def _retry_delay(self, error: ApiError, attempt: int, deadline: float) -> float | None:
        if not isinstance(error, RateLimited):
            self.pacer.concurrency.on_error()  # the clean streak starts over
        if not is_retryable(error):
            return None
        if attempt >= self.limits.max_attempts:
            return None
        delay = backoff_delay(attempt, retry_after=error.retry_after,
                              base=self.limits.backoff_base_s, cap=self.limits.backoff_cap_s,
                              rng=self._rng.random)
        if time.monotonic() + delay > deadline:
            return None
        return delay

    async def _attempt(self, job: CaptionJob) -> tuple[ChatResult, float, float | None]:
        """One request: take a slot, wait for the buckets and the budget, send, parse."""
        run = job.run
        if not await self.pacer.acquire(lambda: run.stopped is not None):
            raise _NotSent()
        try:
            tokens = job.estimated_prompt_tokens + job.max_output_tokens
            if not await self._paced(run, tokens):
                raise _NotSent()
            reservation = await self._reserve(job)
            billed: float | None = None
            try:
                if self._closing:
                    raise _NotSent()  # the last DoFn left: nothing more is sent
                async with run.in_flight():
                    self.metrics.inc(m.REQUESTS)
                    sent = self.pacer.sending(run)
                    try:
                        status, headers, payload, latency_ms = await self.transport.post(
                            job.body, job.url)
                    finally:
                        self.pacer.answered(sent)
                try:
                    result = self._parse(status, headers, payload)
                except ApiError as exc:
                    billed = cost_usd(job.price, exc.usage)
                    self._on_api_error(exc)
                    raise
                billed = cost_usd(job.price, result.usage)
            finally:
                await run.budget.settle(reservation, billed or 0.0)
            self.pacer.apply_server_limits(result.rate_limits)
            self.pacer.correct_tokens(result.usage.total_tokens - tokens)
            self.metrics.observe(m.LATENCY_MS, latency_ms)
            self.pacer.observe_latency(latency_ms / 1000)
            return result, latency_ms, billed
        finally:
            await self.pacer.release()

    async def _paced(self, run: RunState, tokens: int) -> bool:
        """Wait for this process's buckets, then the job-wide limit if there is one; False
        (nothing to send) when the run stopped meanwhile or the limit's service is gone."""
        wait = self.pacer.reserve(tokens)
        if wait > 0:
            self.metrics.inc(m.THROTTLED_MS, int(wait * 1000))
            if not await run.sleep(wait):
                return False
        if self.global_limit is None:
            return True
        try:
            return await self.global_limit.acquire(run, tokens)
        except LimiterUnavailable as exc:
            # Sending on without the job-wide limit would overrun the account for every worker;
            # Beam already retried the service for about 40 s. Stop: nothing unsent is billed,
            # and --resume sends the rest once the service is back.
            self._stop(run, StopReason("request", "rate_limiter_unavailable", str(exc)))
            return False

    async def _reserve(self, job: CaptionJob) -> int:
        """Reserve the job's worst case from its run's spend share, or raise _NotSent."""
        run = job.run
        worst = SpendCap.worst_case_usd(job.price, job.estimated_prompt_tokens,
                                        job.max_output_tokens)
        reservation = await run.budget.reserve(worst, lambda: run.stopped is not None)
        if reservation is Reservation.SPENT:
            self._stop(run, StopReason("budget", "budget_exceeded", _budget_message(run)))
        if isinstance(reservation, Reservation):
            raise _NotSent()
        return reservation

    def _on_api_error(self, exc: ApiError) -> None:
        self.pacer.apply_server_limits(exc.rate_limits)
        if isinstance(exc, RateLimited) and not isinstance(exc, QuotaExceeded):
            self.metrics.inc(m.RATE_LIMITED)
            self.pacer.concurrency.on_rate_limited(exc.retry_after)


def _budget_message(run: RunState) -> str:
    settings, budget = run.settings, run.budget
    return (f"the spend cap --max-cost-usd {settings.max_cost_usd} was reached (this worker "
            f"process's share is {format_usd(budget.share_usd or 0.0)}, "
            f"{format_usd(budget.spent_usd)} spent); run again with --resume to caption the rest")
