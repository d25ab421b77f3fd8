"""POST /v1/chat/completions: a computed completion, behind rate limits, faults and latency.

Order of events, as a real server's: validation (400/404) -> rate limits (429) -> injected fault
draw -> queue for a free slot (--max-concurrency) and wait the latency -> answer. The request's
outcome, model and usage go into `request[RECORD]` for the app's middleware to count and log.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from beam_caption.simulator.apierror import SimError
from beam_caption.simulator.completion import Completion, compute
from beam_caption.simulator.ratelimit import rate_limited
from beam_caption.simulator.state import STATE, SimState
from beam_caption.simulator.usage import usage_body
from beam_caption.simulator.wire import dumps, read_json


@dataclass
class RequestRecord:
    """What the middleware logs and counts for one request."""

    outcome: str = "ok"
    model: str | None = None
    body: Any = None
    usage: dict[str, Any] | None = None


RECORD = web.RequestKey("sim_record", RequestRecord)
Render = Callable[[Completion, str | None], dict[str, Any]]

# The immediate error faults: outcome, status, error type, code and message.
_ERROR_FAULTS = {
    "500": ("server_error", 500, "server_error", None,
            "The server had an error while processing your request. Sorry about that!"),
    "503": ("server_error", 503, "server_error", None,
            "The engine is currently overloaded, please try again later."),
    "quota": ("insufficient_quota", 429, "insufficient_quota", "insufficient_quota",
              "You exceeded your current quota, please check your plan and billing details. "
              "For more information on this error, read the docs: "
              "https://platform.openai.com/docs/guides/error-codes/api-errors."),
}


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """The endpoint; see the module docstring for the order of events."""
    state = request.app[STATE]
    record = request[RECORD]
    record.body = await read_json(request)
    if isinstance(record.body, dict) and isinstance(record.body.get("model"), str):
        record.model = record.body["model"]
    done = await compute(state, record.body)
    return await serve(request, done, lambda d, reason: d.body(reason))


async def serve(request: web.Request, done: Completion, render: Render) -> web.StreamResponse:
    """Limits, faults, latency and the answer of a computed completion, whichever dialect:
    `render(done, finish_reason)` shapes the body (finish_reason "content_filter" when the
    fault draw withholds the answer, else None)."""
    state = request.app[STATE]
    record = request[RECORD]
    state.limiter.admit(time.monotonic(), _tpm_cost(done), done.request.model)
    fault = state.draw_fault()
    _raise_error_fault(state, fault, done.request.model)
    await _generate(state, done)
    if fault in ("timeout", "disconnect"):
        record.outcome = fault
        if fault == "timeout":
            await _hang(request, state.config.hang_seconds)
        return _drop(request)
    filtered = fault == "content_filter"
    body = render(done, "content_filter" if filtered else None)
    payload = dumps(body)
    if fault == "broken_json":
        record.outcome = "broken_json"
        # A 200 whose JSON stops half-way (Content-Length matches, so only parsing fails).
        return web.Response(body=payload[: len(payload) // 2], content_type="application/json")
    record.outcome = "content_filter" if filtered else "ok"
    # The ledger bills in chat-completions terms whatever the dialect; a withheld answer
    # bills its prompt only.
    record.usage = usage_body(done.prompt_tokens, 0) if filtered else done.usage()
    state.ledger.bill(done.request.model, record.usage, done.image_hashes)
    return web.Response(body=payload, content_type="application/json")


def _tpm_cost(done: Completion) -> int:
    """What a request counts against TPM: prompt plus max completion (or the actual answer)."""
    limit = done.request.max_completion_tokens
    completion = limit * done.request.n if limit is not None else done.completion_tokens
    return done.prompt_tokens + completion


def _raise_error_fault(state: SimState, fault: str | None, model: str) -> None:
    if fault == "429":
        wait = state.fault_rng.uniform(0.05, 0.5)  # a short, seeded retry hint
        raise rate_limited(wait, f"Rate limit reached for {model} in organization org-sim on "
                           "requests per min (RPM): simulated overload.")
    if fault in _ERROR_FAULTS:
        outcome, status, kind, code, message = _ERROR_FAULTS[fault]
        raise SimError(status, message, type=kind, code=code, outcome=outcome)


async def _generate(state: SimState, done: Completion) -> None:
    """Wait for a free slot (if capacity is bounded), then for the simulated latency."""
    delay = state.latency_s(done.completion_tokens)
    if state.semaphore is None:
        if delay > 0:
            await asyncio.sleep(delay)
        return
    async with state.semaphore:
        await asyncio.sleep(delay)


async def _hang(request: web.Request, seconds: float) -> None:
    """Say nothing for `seconds`, or until the client gives up (longer than any sane timeout)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        await asyncio.sleep(min(0.2, max(0.0, deadline - time.monotonic())))


def _drop(request: web.Request) -> web.Response:
    """Close the connection without an answer; aiohttp then discards the returned response."""
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=204)
