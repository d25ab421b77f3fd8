"""Anthropic's Message Batches API: POST /v1/messages/batches, GET .../{id}, POST .../{id}/cancel
and GET .../{id}/results (JSONL), over inline_batch.py's timeline.

Checked when the batch is created, as the API does: a non-empty `requests` list of
{"custom_id" (1-64 of [A-Za-z0-9_-], unique), "params"}, at most batch_max_lines requests and
batch_max_bytes bytes. Each request's params are validated when it runs: an invalid one is an
`errored` result, not a failed batch. Results: succeeded (the Message), errored (the error
body), canceled, expired.
"""

from __future__ import annotations

import datetime
import re
import time
import uuid
from typing import Any

from aiohttp import web

from beam_caption.simulator import inline_batch
from beam_caption.simulator.apierror import SimError, bad_request
from beam_caption.simulator.completion import Completion, complete
from beam_caption.simulator.messages import error_result, message_body, parse_messages_request
from beam_caption.simulator.state import STATE
from beam_caption.simulator.stores import IdStore
from beam_caption.simulator.wire import dumps, json_response, read_json

_CUSTOM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class MessageBatchStore(IdStore[inline_batch.InlineBatch]):
    """Message batches by id."""

    def __init__(self) -> None:
        super().__init__("msgbatch_sim", "message batch", "message_batch_id")


MESSAGE_BATCHES = web.AppKey("sim_message_batches", MessageBatchStore)


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")


def batch_object(request: web.Request, batch: inline_batch.InlineBatch) -> dict[str, Any]:
    """The MessageBatch object as it stands now."""
    now = time.time()
    done = batch.done_by(now)
    ended = batch.phase == "ended"
    counts = {"processing": 0 if ended else len(batch.keys) - len(done),
              "succeeded": sum(r.ok for r in done),
              "errored": sum(not r.ok for r in done),
              "canceled": len(batch.keys) - len(done) if batch.ended_as == "cancelled" else 0,
              "expired": len(batch.keys) - len(done) if batch.ended_as == "expired" else 0}
    root = f"{request.scheme}://{request.host}"
    return {"id": batch.id, "type": "message_batch",
            "processing_status": {"pending": "in_progress", "running": "in_progress",
                                  "cancelling": "canceling"}.get(batch.phase, batch.phase),
            "request_counts": counts, "ended_at": _iso(batch.stamps.get("ended")),
            "created_at": _iso(batch.created_at),
            "expires_at": _iso(batch.created_at + 24 * 3600),
            "cancel_initiated_at": _iso(batch.stamps.get("cancelling")), "archived_at": None,
            "results_url": f"{root}/v1/messages/batches/{batch.id}/results" if ended else None}


async def create(request: web.Request) -> web.Response:
    """POST /v1/messages/batches."""
    state = request.app[STATE]
    raw = await request.read()
    if len(raw) > state.config.batch_max_bytes:
        raise SimError(413, f"Request exceeds the maximum size of {state.config.batch_max_bytes}"
                       " bytes for a batch.", outcome="bad_request")
    body = await read_json(request)
    items = body.get("requests") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise bad_request("requests: Field required (a non-empty list)")
    if len(items) > state.config.batch_max_lines:
        raise bad_request(f"requests: a batch may hold at most {state.config.batch_max_lines} "
                          "requests")
    seen: set[str] = set()
    for i, item in enumerate(items):
        cid = item.get("custom_id") if isinstance(item, dict) else None
        if not isinstance(cid, str) or not _CUSTOM_ID.match(cid):
            raise bad_request(f"requests.{i}.custom_id: String should match pattern "
                              "'^[a-zA-Z0-9_-]{1,64}$'")
        if cid in seen:
            raise bad_request(f"requests.{i}.custom_id: duplicate custom_id {cid}")
        if not isinstance(item.get("params"), dict):
            raise bad_request(f"requests.{i}.params: Field required")
        seen.add(cid)
    store = request.app[MESSAGE_BATCHES]
    batch = inline_batch.InlineBatch(store.new_id(), None, [i["custom_id"] for i in items],
                                     time.time())
    store.put(batch.id, batch)

    async def compute(params: Any) -> Completion:
        return await complete(state, parse_messages_request(params, state.models))

    inline_batch.start(request.app, batch, [(i["custom_id"], i["params"]) for i in items],
                       compute, message_body, error_result)
    return json_response(batch_object(request, batch))


async def retrieve(request: web.Request) -> web.Response:
    """GET /v1/messages/batches/{id}."""
    batch = request.app[MESSAGE_BATCHES].get(request.match_info["batch_id"])
    return json_response(batch_object(request, batch))


async def cancel(request: web.Request) -> web.Response:
    """POST /v1/messages/batches/{id}/cancel."""
    batch = request.app[MESSAGE_BATCHES].get(request.match_info["batch_id"])
    if batch.phase in ("pending", "running"):
        inline_batch.cancel(request.app, batch)
    return json_response(batch_object(request, batch))


async def results(request: web.Request) -> web.Response:
    """GET /v1/messages/batches/{id}/results: one JSON line per request, once ended."""
    batch = request.app[MESSAGE_BATCHES].get(request.match_info["batch_id"])
    if batch.phase != "ended":
        raise bad_request(f"Message batch {batch.id} has not ended; results are not ready.")
    lines = []
    for key in batch.keys:
        outcome = batch.outcome_of(key)
        if outcome is None:
            result: dict[str, Any] = {"type": "canceled" if batch.ended_as == "cancelled"
                                      else "expired"}
        elif outcome.ok:
            result = {"type": "succeeded", "message": outcome.body}
        else:
            result = {"type": "errored", "error": outcome.body}
        lines.append(dumps({"custom_id": key, "result": result}) + b"\n")
    return web.Response(body=b"".join(lines), content_type="application/binary",
                        headers={"x-batch-lines": str(len(lines)),
                                 "request-id": f"req_{uuid.uuid4().hex[:24]}"})
