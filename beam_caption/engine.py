"""The per-process AsyncEngine: one event loop, one aiohttp session, one set of limits per worker.

Every CaptionImages DoFn instance and thread in a worker process shares one engine (registry below).
DoFns hand it jobs from their own threads and get concurrent.futures.Future objects back; the
engine runs each job on its loop: adaptive concurrency slot -> rate-limit buckets -> POST -> parse
-> retry or finish. Exactly one retry layer lives here, decided by client.is_retryable.

Exactly-once answers: a job is retried only while it has no parsed successful answer; identical
jobs (same request_key) in one process are sent once and the answer is shared (`dedupe`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, replace

import aiohttp

from beam_caption import metrics as m
from beam_caption.budget import SpendCap
from beam_caption.client import (
    ApiError,
    AuthError,
    BadRequest,
    ChatResult,
    QuotaExceeded,
    RateLimited,
    Usage,
    as_api_error,
    build_request,
    is_retryable,
    parse_response,
)
from beam_caption.config import CaptionConfig
from beam_caption.images import PreparedImage
from beam_caption.limits import (
    AdaptiveConcurrency,
    RateLimitInfo,
    TokenBucket,
    backoff_delay,
)
from beam_caption.loop import LoopThread
from beam_caption.progress import process_progress

_LOG = logging.getLogger(__name__)
_DEDUPE_MEMORY = 20_000  # answers remembered per process for dedupe (~1.4 KB each)


@dataclass(frozen=True)
class CaptionJob:
    """One image to caption, with its request key and token estimates."""

    image: PreparedImage
    request_key: str
    estimated_prompt_tokens: int
    prompt: str | None = None


@dataclass(frozen=True)
class StopReason:
    """Why the engine stopped sending: every later job fails fast with this stage and code."""

    stage: str
    code: str
    message: str


@dataclass(frozen=True)
class CaptionOutcome:
    """How a job ended: an answer, or the error that ended it, and what it took."""

    result: ChatResult | None
    error: BaseException | None
    attempts: int
    latency_ms: float | None
    deduplicated: bool = False
    stopped: StopReason | None = None


class AsyncEngine:
    """Sends chat-completion requests for one worker process within its share of the limits."""

    def __init__(self, config: CaptionConfig, loop_thread: LoopThread,
                 api_key: str | None) -> None:
        self.config = config
        self.metrics = m.MetricsCollector()
        self._loop_thread = loop_thread
        self._api_key = api_key
        limits = config.limits
        self._concurrency = AdaptiveConcurrency(limits.concurrency)
        # Tiny bursts: providers count limits over a sliding minute, and a bucket admits at most
        # its capacity on top of its rate in any window, so pacing evenly is what stays under.
        self._requests = TokenBucket(limits.rpm_per_worker / 60.0, 1.0)
        self._tokens = TokenBucket(limits.tpm_per_worker / 60.0,
                                   max(1.0, limits.tpm_per_worker / 600.0))
        share = (config.max_cost_usd / limits.workers) if config.max_cost_usd else None
        self.spend = SpendCap(share, config.price)
        self.progress = process_progress(config.progress_settings)
        self._rng = random.Random()
        self._session: aiohttp.ClientSession | None = None
        # asyncio primitives bind to the engine's loop on first use (Python >= 3.10).
        self._slots = asyncio.Condition()
        self._budget_settled = asyncio.Condition()
        self._in_flight = 0
        self._answers: OrderedDict[str, asyncio.Future[CaptionOutcome]] = OrderedDict()
        self._stop: StopReason | None = None
        self._successes = 0
        self._failure_streak: tuple[str, int] = ("", 0)
        self._lock = threading.Lock()
        if limits.rpm or limits.tpm:
            _LOG.info("rate limits for this worker process: %.1f requests/min, %.0f tokens/min "
                      "(the account's --rpm %.0f / --tpm %.0f divided by %d expected processes)",
                      limits.rpm_per_worker, limits.tpm_per_worker, limits.rpm, limits.tpm,
                      limits.workers)

    # -- lifecycle -------------------------------------------------------------------------
    async def _open(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.config.limits.concurrency, limit_per_host=0,
                                         ttl_dns_cache=300)
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        self._session = aiohttp.ClientSession(connector=connector, headers=headers)

    def open(self) -> None:
        """Create the session on the engine's loop (called once, from the registry)."""
        self._loop_thread.run(self._open(), timeout=30)

    def close(self) -> None:
        """Close the session; jobs still running are cancelled."""
        if self._session is not None:
            self._loop_thread.run(self._session.close(), timeout=30)
            self._session = None

    @property
    def stopped(self) -> StopReason | None:
        """Why the engine stopped sending, or None while it sends."""
        return self._stop

    def stop(self, reason: StopReason) -> None:
        """Stop sending new requests; later jobs end at once with `reason`."""
        with self._lock:
            if self._stop is None:
                self._stop = reason
                self.metrics.inc(m.RUN_STOPPED)
                _LOG.error("beam-caption stopped sending requests: %s", reason.message)

    # -- submission ------------------------------------------------------------------------
    def submit(self, job: CaptionJob) -> concurrent.futures.Future[CaptionOutcome]:
        """Schedule `job` on the engine's loop; callable from any thread."""
        return self._loop_thread.submit(self._counted(job))

    async def _counted(self, job: CaptionJob) -> CaptionOutcome:
        outcome = await self._run_deduplicated(job)
        result = outcome.result
        if result is None:
            self.progress.record(ok=False)
        else:
            billed = not outcome.deduplicated
            self.progress.record(ok=True, tokens=result.usage.total_tokens if billed else 0,
                                 cost_usd=self._cost_usd(result.usage) if billed else 0.0)
        return outcome

    async def _run_deduplicated(self, job: CaptionJob) -> CaptionOutcome:
        if not self.config.dedupe:
            return await self._run(job)
        earlier = self._answers.get(job.request_key)
        if earlier is not None:
            self._answers.move_to_end(job.request_key)
            try:
                outcome = await asyncio.shield(earlier)
            except asyncio.CancelledError:
                return await self._run(job)
            if outcome.result is not None:
                self.metrics.inc(m.DEDUPLICATED)
                return replace(outcome, attempts=0, deduplicated=True)
            # The first copy failed: this copy is a separate chance, not a shared failure.
            return await self._run(job)
        future: asyncio.Future[CaptionOutcome] = asyncio.get_running_loop().create_future()
        self._answers[job.request_key] = future
        while len(self._answers) > _DEDUPE_MEMORY:
            self._answers.popitem(last=False)
        try:
            outcome = await self._run(job)
        except BaseException:
            future.cancel()  # copies waiting on it run on their own
            self._answers.pop(job.request_key, None)
            raise
        future.set_result(outcome)
        if outcome.result is None:
            self._answers.pop(job.request_key, None)
        return outcome

    async def _run(self, job: CaptionJob) -> CaptionOutcome:
        """Attempt `job` until it has an answer, a permanent error, or no attempts left."""
        limits = self.config.limits
        body = json.dumps(build_request(self.config.request, job.image.jpeg, job.prompt))
        deadline = time.monotonic() + limits.retry_deadline_s
        attempt = 0
        while True:
            if self._stop is not None:
                return CaptionOutcome(None, None, attempt, None, stopped=self._stop)
            attempt += 1
            try:
                result, latency_ms = await self._attempt(job, body)
            except _Stopped:
                return CaptionOutcome(None, None, attempt - 1, None, stopped=self._stop)
            except (TimeoutError, ApiError, aiohttp.ClientError) as exc:
                error = as_api_error(exc) or ApiError(
                    f"request failed: {type(exc).__name__}", code="request_failed")
                self._count_failure(error)
                delay = self._retry_delay(error, attempt, deadline)
                if delay is None:
                    self._note_final_failure(error)
                    return CaptionOutcome(None, error, attempt, None)
                self.metrics.inc(m.RETRIES)
                self.metrics.inc(f"retries_{error.row_code}")
                self.metrics.inc(m.BACKOFF_MS, int(delay * 1000))
                await asyncio.sleep(delay)
                continue
            self._note_success(result)
            return CaptionOutcome(result, None, attempt, latency_ms)

    def _retry_delay(self, error: ApiError, attempt: int, deadline: float) -> float | None:
        if not is_retryable(error) or attempt >= self.config.limits.max_attempts:
            return None
        limits = self.config.limits
        delay = backoff_delay(attempt, retry_after=error.retry_after, base=limits.backoff_base_s,
                              cap=limits.backoff_cap_s, rng=self._rng.random)
        if time.monotonic() + delay > deadline:
            return None
        return delay

    async def _attempt(self, job: CaptionJob, body: str) -> tuple[ChatResult, float]:
        """One request: take a slot, wait for the buckets and the budget, send, parse."""
        await self._acquire_slot()
        try:
            tokens = job.estimated_prompt_tokens + self.config.request.max_output_tokens
            wait = max(self._requests.reserve(1), self._tokens.reserve(tokens))
            if wait > 0:
                self.metrics.inc(m.THROTTLED_MS, int(wait * 1000))
                await asyncio.sleep(wait)
            worst_usd = await self._reserve_budget(job)
            billed_usd = 0.0
            try:
                status, headers, payload, latency_ms = await self._send(body)
                try:
                    result = parse_response(status, headers, payload)
                except ApiError as exc:
                    billed_usd = self._cost_usd(exc.usage)
                    self._on_api_error(exc)
                    raise
                billed_usd = self._cost_usd(result.usage)
            finally:
                self.spend.settle(worst_usd, billed_usd)
                async with self._budget_settled:
                    self._budget_settled.notify_all()
            self._apply_server_limits(result.rate_limits)
            self._tokens.adjust(result.usage.total_tokens - tokens)
            self.metrics.observe(m.LATENCY_MS, latency_ms)
            return result, latency_ms
        finally:
            await self._release_slot()

    async def _reserve_budget(self, job: CaptionJob) -> float:
        """Reserve the job's worst-case cost, waiting for in-flight requests to settle if
        needed; stops the engine when the share is spent. Returns the amount reserved."""
        worst_usd = self.spend.worst_case_usd(job.estimated_prompt_tokens,
                                              self.config.request.max_output_tokens)
        while self._stop is None and not self.spend.try_reserve(worst_usd):
            if self.spend.reserved_usd <= 0:
                self.stop(StopReason("budget", "budget_exceeded", self._budget_message()))
                break
            async with self._budget_settled:
                await self._budget_settled.wait()
        if self._stop is not None:
            raise _Stopped()
        return worst_usd

    async def _send(self, body: str) -> tuple[int, Mapping[str, str], bytes, float]:
        """POST `body`; the whole response is read inside `async with`, under a total timeout."""
        assert self._session is not None
        self.metrics.inc(m.REQUESTS)
        endpoint = self.config.endpoint
        timeout = aiohttp.ClientTimeout(total=endpoint.request_timeout_s,
                                        sock_connect=endpoint.connect_timeout_s)
        started = time.monotonic()
        async with self._session.post(endpoint.chat_completions_url, data=body,
                                      timeout=timeout) as response:
            payload = await response.read()
            status, headers = response.status, response.headers
        return status, headers, payload, (time.monotonic() - started) * 1000

    def _on_api_error(self, exc: ApiError) -> None:
        self._apply_server_limits(exc.rate_limits)
        if isinstance(exc, RateLimited) and not isinstance(exc, QuotaExceeded):
            self.metrics.inc(m.RATE_LIMITED)
            self._concurrency.on_rate_limited(exc.retry_after)

    def _cost_usd(self, usage: Usage | None) -> float:
        price = self.config.price
        if usage is None or price is None:
            return 0.0
        return price.cost_usd(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)

    def _budget_message(self) -> str:
        share = self.spend.share_usd or 0.0
        return (f"the spend cap --max-cost-usd {self.config.max_cost_usd:g} was reached (this "
                f"worker process's share is ${share:.4f}, ${self.spend.spent_usd:.4f} spent); "
                "run again with --resume to caption the rest")

    async def _acquire_slot(self) -> None:
        async with self._slots:
            await self._slots.wait_for(lambda: self._in_flight < self._concurrency.limit)
            self._in_flight += 1
            self.metrics.gauge(m.IN_FLIGHT, self._in_flight)

    async def _release_slot(self) -> None:
        async with self._slots:
            self._in_flight -= 1
            self.metrics.gauge(m.IN_FLIGHT, self._in_flight)
            self.metrics.gauge(m.CONCURRENCY, self._concurrency.limit)
            self._slots.notify_all()

    def _apply_server_limits(self, info: RateLimitInfo | None) -> None:
        """Tighten our buckets when the server reports less headroom than they hold."""
        if info is None:
            return
        workers = self.config.limits.workers
        for enabled, bucket, limit, remaining, reset in (
                (self.config.limits.rpm, self._requests, info.limit_requests,
                 info.remaining_requests, info.reset_requests_s),
                (self.config.limits.tpm, self._tokens, info.limit_tokens,
                 info.remaining_tokens, info.reset_tokens_s)):
            if enabled and remaining is not None and reset is not None and limit:
                # With nothing left, wait about one unit's share of the window, not the whole
                # reset: windows slide, and a slot frees up as soon as the oldest use expires.
                bucket.tighten(remaining / workers, reset / limit)

    # -- bookkeeping -----------------------------------------------------------------------
    def _count_failure(self, error: ApiError) -> None:
        if isinstance(error, RateLimited):
            return
        self._concurrency.on_error()

    def _note_success(self, result: ChatResult) -> None:
        self._concurrency.on_success()
        self.metrics.gauge(m.CONCURRENCY, self._concurrency.limit)
        self.metrics.inc(m.REQUESTS_OK)
        self.metrics.inc(m.TOKENS_IN, result.usage.prompt_tokens)
        self.metrics.inc(m.TOKENS_OUT, result.usage.completion_tokens)
        with self._lock:
            self._successes += 1
            self._failure_streak = ("", 0)

    def _note_final_failure(self, error: ApiError) -> None:
        """Stop the run when a terminal failure repeats: 76,000 identical rows help nobody."""
        code = error.row_code
        with self._lock:
            last, count = self._failure_streak
            count = count + 1 if code == last else 1
            self._failure_streak = (code, count)
            successes = self._successes
        threshold = self.config.limits.abort_after_identical_failures
        if isinstance(error, AuthError | QuotaExceeded):
            threshold = min(threshold, 3)
        elif not isinstance(error, BadRequest) or successes:
            return  # a 400 after successes is about one image, not the run
        if count >= threshold:
            self.stop(StopReason("request", code, _abort_message(error, count)))


class _Stopped(ApiError):
    """Raised inside an attempt when the engine stopped while the job waited for a slot."""

    def __init__(self) -> None:
        super().__init__("not sent: the run stopped sending requests", code="stopped")


def _abort_message(error: ApiError, count: int) -> str:
    hint = ""
    if isinstance(error, AuthError):
        hint = (" Check the API key (OPENAI_API_KEY, --api-key-env, --api-key-file or "
                "--api-key-secret).")
    elif isinstance(error, QuotaExceeded):
        hint = " The account has no quota left; add credit, then run again with --resume."
    return (f"{count} requests in a row failed with {error.row_code}: {error}.{hint} "
            "Images not yet sent were not charged.")
