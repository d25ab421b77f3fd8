"""The timeline of a batch whose requests came inline (Anthropic's Message Batches, Gemini's
Batch API), shared by messages_batch.py and gemini_batch.py; each renders it in its own shapes.

Over --batch-seconds (T): pending until 0.1 T, running until 0.8 T (request i of n done at
0.1 T + 0.7 T (i+1)/n), then ended ("completed"). With batch_expire_rate > 0 a seeded share of
requests is never run and the batch ends "expired". A cancel keeps, and bills, the requests done
before it; the rest are not run, and the batch ends "cancelled" shortly after. Answers are billed
at the price table's batch discount. Faults, latency and rate limits do not apply to batches.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from beam_caption.simulator.apierror import SimError
from beam_caption.simulator.completion import Completion
from beam_caption.simulator.state import STATE

PENDING, RUNNING = 0.1, 0.8  # fractions of batch_seconds


@dataclass
class LineOutcome:
    """One request's outcome: `body` is the answer (ok) or the error body; None: not run."""

    key: str
    ok: bool = False
    status: int | None = None
    body: dict[str, Any] | None = None
    done_at: float = 0.0
    done: Completion | None = None


@dataclass
class InlineBatch:
    """One batch and what its background task has produced so far."""

    id: str
    model: str | None
    keys: list[str]
    created_at: float
    phase: str = "pending"  # pending | running | cancelling | ended
    ended_as: str | None = None  # completed | expired | cancelled
    stamps: dict[str, float] = field(default_factory=dict)
    results: list[LineOutcome] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def done_by(self, now: float) -> list[LineOutcome]:
        """The requests with an outcome by `now` (all of them once ended)."""
        return [r for r in self.results if r.status is not None and r.done_at <= now]

    def outcome_of(self, key: str) -> LineOutcome | None:
        """The request's outcome once ended; None: it was never run (expired or cancelled)."""
        return next((r for r in self.results if r.key == key and r.status is not None), None)


Compute = Callable[[Any], Awaitable[Completion]]
Render = Callable[[Completion], dict[str, Any]]
RenderError = Callable[[SimError], dict[str, Any]]


def start(app: web.Application, batch: InlineBatch, requests: list[tuple[str, Any]],
          compute: Compute, render: Render, render_error: RenderError) -> None:
    """Run the batch in the background (see the module docstring)."""
    batch.task = asyncio.get_running_loop().create_task(
        _run(app, batch, requests, compute, render, render_error))


async def _run(app: web.Application, batch: InlineBatch, requests: list[tuple[str, Any]],
               compute: Compute, render: Render, render_error: RenderError) -> None:
    state = app[STATE]
    seconds = state.config.batch_seconds
    await asyncio.sleep(PENDING * seconds)
    batch.phase = "running"
    begin = batch.stamps["running"] = time.time()
    span = (RUNNING - PENDING) * seconds
    expired = False
    for i, (key, params) in enumerate(requests):
        outcome = LineOutcome(key)
        rate = state.config.batch_expire_rate
        if rate > 0 and state.batch_rng.random() < rate:
            expired = True  # never run: the window closed first
        else:
            try:
                done = await compute(params)
                outcome.ok, outcome.status, outcome.body, outcome.done = True, 200, \
                    render(done), done
            except SimError as exc:
                outcome.status, outcome.body = exc.status, render_error(exc)
            outcome.done_at = begin + span * (i + 1) / len(requests)
        batch.results.append(outcome)
        if i % 64 == 63:
            await asyncio.sleep(0)  # let other requests in while a big batch computes
    await asyncio.sleep(max(0.0, begin + span - time.time()) + (1 - RUNNING) * seconds)
    finish(app, batch, float("inf"), "expired" if expired else "completed")


def cancel(app: web.Application, batch: InlineBatch) -> None:
    """Stop running requests now; the batch ends "cancelled" shortly after."""
    if batch.task is not None:
        batch.task.cancel()
    batch.phase = "cancelling"
    cutoff = batch.stamps["cancelling"] = time.time()

    async def later() -> None:
        await asyncio.sleep(0.05 * app[STATE].config.batch_seconds)
        finish(app, batch, cutoff, "cancelled")

    batch.task = asyncio.get_running_loop().create_task(later())


def finish(app: web.Application, batch: InlineBatch, cutoff: float, outcome: str) -> None:
    """End the batch: keep the requests done by `cutoff`, bill the answers among them."""
    state = app[STATE]
    for r in batch.results:
        if r.status is not None and r.done_at > cutoff:
            r.ok, r.status, r.body, r.done = False, None, None, None
    done = [r for r in batch.results if r.status is not None]
    for r in done:
        if r.ok and r.done is not None:
            state.ledger.bill(r.done.request.model, r.done.usage(), r.done.image_hashes,
                              batch=True)
    state.ledger.batch_lines.update({"ok": sum(r.ok for r in done),
                                     "failed": len(batch.keys) - sum(r.ok for r in done)})
    batch.phase, batch.ended_as = "ended", outcome
    batch.stamps["ended"] = time.time()
