"""The Batch API: create, retrieve, list and cancel batches of chat completions.

Timeline over --batch-seconds (T): validating until 0.1 T, in_progress until 0.8 T (line i of n is
done at 0.1 T + 0.7 T (i+1)/n, which request_counts reflect), finalizing until T, then completed
with an output file (lines in seeded random order, keyed by custom_id) and an error file. Whole-
file problems fail the batch while validating (more than batch_max_lines lines, duplicate
custom_id, lines for different models, no lines); a malformed line goes to the error file. A
cancelled batch keeps, and bills, the lines done before the cancel. With batch_expire_rate > 0 a
seeded share of lines is never run: they go to the error file with code batch_expired (as the real
API writes the lines a 24 h window did not reach) and the batch ends "expired". Batch tokens are
billed at the price table's batch discount. Faults, latency and rate limits do not apply to batches.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from beam_caption.simulator.apierror import SimError, bad_request, invalid_value, missing
from beam_caption.simulator.batch_lines import LineResult, expired_line, run_line, split_lines
from beam_caption.simulator.files import FILES
from beam_caption.simulator.state import STATE
from beam_caption.simulator.stores import IdStore
from beam_caption.simulator.wire import dumps, json_response, read_json

ENDPOINTS = ("/v1/chat/completions",)
VALIDATING, IN_PROGRESS, FINALIZING = 0.1, 0.8, 1.0  # fractions of batch_seconds


@dataclass
class BatchJob:
    """One batch and what its background task has produced so far."""

    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, Any] | None
    created_at: float
    status: str = "validating"
    stamps: dict[str, float] = field(default_factory=dict)
    model: str | None = None
    total: int = 0
    results: list[LineResult] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    output_file_id: str | None = None
    error_file_id: str | None = None
    usage: dict[str, Any] | None = None
    task: asyncio.Task[None] | None = None

    def object(self, now: float) -> dict[str, Any]:
        """The Batch object (absent fields are omitted, not null, as the schema types them)."""
        done = [r for r in self.results if r.done_at <= now]
        body: dict[str, Any] = {
            "id": self.id, "object": "batch", "endpoint": self.endpoint,
            "input_file_id": self.input_file_id, "completion_window": self.completion_window,
            "status": self.status, "created_at": int(self.created_at),
            "expires_at": int(self.created_at) + 24 * 3600,
            "request_counts": {"total": self.total,
                               "completed": sum(r.ok for r in done),
                               "failed": sum(not r.ok for r in done)},
            "metadata": self.metadata,
        }
        body.update({f"{name}_at": int(t) for name, t in self.stamps.items()})
        for key in ("model", "output_file_id", "error_file_id", "usage"):
            if getattr(self, key) is not None:
                body[key] = getattr(self, key)
        if self.errors:
            body["errors"] = {"object": "list", "data": self.errors}
        return body


class BatchStore(IdStore[BatchJob]):
    """Batches by id, oldest first."""

    def __init__(self) -> None:
        super().__init__("batch_sim", "Batch", "batch_id")


BATCHES = web.AppKey("sim_batches", BatchStore)


async def create(request: web.Request) -> web.Response:
    """POST /v1/batches."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise bad_request("Invalid request body: expected a JSON object.")
    for key in ("input_file_id", "endpoint", "completion_window"):
        if key not in body:
            raise missing(key)
    if body["endpoint"] not in ENDPOINTS:
        raise invalid_value("endpoint", body["endpoint"], ENDPOINTS)
    if body["completion_window"] != "24h":
        raise invalid_value("completion_window", body["completion_window"], ("24h",))
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise bad_request("Invalid 'metadata': expected an object.", "metadata", "invalid_type")
    source = request.app[FILES].get(str(body["input_file_id"]))
    if source.purpose != "batch":
        raise bad_request(f"File {source.id} has purpose {source.purpose!r}; a batch needs "
                          "purpose 'batch'.", "input_file_id", "invalid_value")
    store = request.app[BATCHES]
    job = BatchJob(store.new_id(), source.id, body["endpoint"], "24h", metadata, time.time())
    store.put(job.id, job)
    job.task = asyncio.get_running_loop().create_task(_run(request.app, job, source.data))
    return json_response(job.object(time.time()))


async def retrieve(request: web.Request) -> web.Response:
    """GET /v1/batches/{id}."""
    job = request.app[BATCHES].get(request.match_info["batch_id"])
    return json_response(job.object(time.time()))


async def list_batches(request: web.Request) -> web.Response:
    """GET /v1/batches?limit=&after= (newest first)."""
    try:
        limit = int(request.query.get("limit", "20"))
    except ValueError:
        raise bad_request("Invalid 'limit': expected an integer.", "limit") from None
    if not 1 <= limit <= 100:
        raise bad_request("Invalid 'limit': expected a value between 1 and 100.", "limit")
    jobs = request.app[BATCHES].values()[::-1]
    after = request.query.get("after")
    if after:
        ids = [j.id for j in jobs]
        jobs = jobs[ids.index(after) + 1:] if after in ids else []
    page, now = jobs[:limit], time.time()
    body: dict[str, Any] = {"object": "list", "data": [j.object(now) for j in page],
                            "has_more": len(jobs) > limit}
    if page:
        body["first_id"], body["last_id"] = page[0].id, page[-1].id
    return json_response(body)


async def cancel(request: web.Request) -> web.Response:
    """POST /v1/batches/{id}/cancel: lines done so far are kept; the rest are not run."""
    job = request.app[BATCHES].get(request.match_info["batch_id"])
    if job.status not in ("validating", "in_progress", "finalizing"):
        raise SimError(409, f"Cannot cancel a batch with status '{job.status}'.",
                       code="batch_not_cancellable", outcome="bad_request")
    if job.task is not None:
        job.task.cancel()
    job.status = "cancelling"
    job.stamps["cancelling"] = cutoff = time.time()
    job.task = asyncio.get_running_loop().create_task(_cancel_later(request.app, job, cutoff))
    return json_response(job.object(cutoff))


async def _cancel_later(app: web.Application, job: BatchJob, cutoff: float) -> None:
    await asyncio.sleep(0.05 * app[STATE].config.batch_seconds)  # cancelling -> cancelled
    _finish(app, job, cutoff, "cancelled")


async def _run(app: web.Application, job: BatchJob, data: bytes) -> None:
    """The batch's life: validate, run every line, finalize, complete."""
    state = app[STATE]
    seconds = state.config.batch_seconds
    await asyncio.sleep(VALIDATING * seconds)
    lines, problem = split_lines(data, state.config.batch_max_lines, job.endpoint)
    if problem is not None:
        job.status, job.errors = "failed", [problem]
        job.stamps["failed"] = time.time()
        return
    job.model = next((line.model for line in lines if line.model), None)
    job.status = "in_progress"
    start = job.stamps["in_progress"] = time.time()
    span = (IN_PROGRESS - VALIDATING) * seconds
    job.total = len(lines)
    expired = 0
    for i, line in enumerate(lines):
        if _expires(state):
            result, expired = expired_line(line), expired + 1
            result.done_at = start + span  # counted as failed when the window closes
        else:
            result = await run_line(state, line)
            result.done_at = start + span * (i + 1) / len(lines)
        job.results.append(result)
        if i % 64 == 63:
            await asyncio.sleep(0)  # let other requests in while a big batch computes
    await asyncio.sleep(max(0.0, start + span - time.time()))
    job.status = "finalizing"
    job.stamps["finalizing"] = time.time()
    await asyncio.sleep((FINALIZING - IN_PROGRESS) * seconds)
    _finish(app, job, float("inf"), "expired" if expired else "completed")


def _expires(state: Any) -> bool:
    """One seeded draw per line, made only when expiry is on (so other runs keep their order)."""
    rate = state.config.batch_expire_rate
    return rate > 0 and state.batch_rng.random() < rate


def _finish(app: web.Application, job: BatchJob, cutoff: float, status: str) -> None:
    """Write the output and error files from the lines done by `cutoff`, and bill them."""
    state, files = app[STATE], app[FILES]
    done = [r for r in job.results if r.done_at <= cutoff]
    state.batch_rng.shuffle(done)  # the API returns lines in any order
    ok = [r for r in done if r.ok]
    failed = [r for r in done if not r.ok]
    for r in ok:
        state.ledger.bill(r.model or "", r.usage or {}, r.images, batch=True)
    state.ledger.batch_lines.update({"ok": len(ok), "failed": len(failed)})
    if ok:
        job.output_file_id = files.add(f"{job.id}_output.jsonl", "batch_output",
                                       _jsonl(r.line for r in ok)).id
    if failed:
        job.error_file_id = files.add(f"{job.id}_error.jsonl", "batch_output",
                                      _jsonl(r.line for r in failed)).id
    job.results = done  # a cancelled batch's counts stop at the cutoff
    job.usage = _usage(ok)
    job.status = status
    job.stamps[status] = time.time()


def _jsonl(lines: Any) -> bytes:
    return b"".join(dumps(line) + b"\n" for line in lines)


def _usage(ok: list[LineResult]) -> dict[str, Any]:
    prompt = sum(r.usage["prompt_tokens"] for r in ok if r.usage)
    completion = sum(r.usage["completion_tokens"] for r in ok if r.usage)
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion}
