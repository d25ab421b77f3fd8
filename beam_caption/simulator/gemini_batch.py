"""The Gemini Batch API with inline requests: POST /v1beta/models/{m}:batchGenerateContent,
GET /v1beta/batches/{id} (the long-running operation) and POST /v1beta/batches/{id}:cancel,
over inline_batch.py's timeline.

Checked when the batch is created: batch.input_config.requests.requests is a non-empty list of
{"request": GenerateContentRequest, "metadata"}, at most batch_max_lines of them, the body at
most batch_max_bytes. Each request is validated when it runs: an invalid one gets an `error`
entry. Once done, the operation's response.inlinedResponses.inlinedResponses lists the requests
that ran, in order, each with its metadata; an expired or cancelled batch lists only those.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

from aiohttp import web

from beam_caption.simulator import inline_batch
from beam_caption.simulator.apierror import SimError, bad_request, not_found
from beam_caption.simulator.completion import Completion, complete
from beam_caption.simulator.dialects import render_error
from beam_caption.simulator.gemini import generate_body, parse_generate_request
from beam_caption.simulator.state import STATE
from beam_caption.simulator.stores import IdStore
from beam_caption.simulator.wire import json_response, read_json

_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1beta."
_STATE = {"pending": "BATCH_STATE_PENDING", "running": "BATCH_STATE_RUNNING",
          "cancelling": "BATCH_STATE_RUNNING", "completed": "BATCH_STATE_SUCCEEDED",
          "expired": "BATCH_STATE_EXPIRED", "cancelled": "BATCH_STATE_CANCELLED"}


class GeminiBatchStore(IdStore[inline_batch.InlineBatch]):
    """Gemini batches by id (the part after batches/)."""

    def __init__(self) -> None:
        super().__init__("simbatch", "batch", "name")


GEMINI_BATCHES = web.AppKey("sim_gemini_batches", GeminiBatchStore)


def _time(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")


def operation(batch: inline_batch.InlineBatch) -> dict[str, Any]:
    """The batch as a long-running operation, as GET answers it."""
    now = time.time()
    done = batch.done_by(now)
    phase = batch.ended_as or batch.phase
    meta = {"@type": _TYPE + "GenerateContentBatch", "name": f"batches/{batch.id}",
            "model": f"models/{batch.model}", "displayName": batch.extra.get("display_name"),
            "createTime": _time(batch.created_at),
            "updateTime": _time(max([batch.created_at, *batch.stamps.values()])),
            "batchStats": {"requestCount": str(len(batch.keys)),
                           "successfulRequestCount": str(sum(r.ok for r in done)),
                           "failedRequestCount": str(sum(not r.ok for r in done)),
                           "pendingRequestCount": str(0 if batch.ended_as else
                                                      len(batch.keys) - len(done))},
            "state": _STATE[phase]}
    body: dict[str, Any] = {"name": f"batches/{batch.id}", "metadata": meta,
                            "done": batch.phase == "ended"}
    if batch.phase == "ended":
        items = []
        for key, metadata in zip(batch.keys, batch.extra["metadata"], strict=True):
            outcome = batch.outcome_of(key)
            if outcome is None:
                continue
            entry = {"response": outcome.body} if outcome.ok else \
                {"error": (outcome.body or {}).get("error", {})}
            items.append({**entry, "metadata": metadata})
        meta["endTime"] = _time(batch.stamps.get("ended"))
        body["response"] = {"@type": _TYPE + "GenerateContentBatchOutput",
                            "inlinedResponses": {"inlinedResponses": items}}
    return body


async def create(request: web.Request) -> web.Response:
    """POST /v1beta/models/{model}:batchGenerateContent."""
    state = request.app[STATE]
    model = request.match_info["model"].removeprefix("models/")
    if model not in state.models:
        raise not_found(f"models/{model} is not found for API version v1beta, or is not "
                        "supported for batchGenerateContent.")
    raw = await request.read()
    if len(raw) > state.config.batch_max_bytes:
        raise bad_request(f"Request payload size exceeds the limit: "
                          f"{state.config.batch_max_bytes} bytes.")
    body = await read_json(request)
    batch_def = body.get("batch") if isinstance(body, dict) else None
    config = batch_def.get("input_config", batch_def.get("inputConfig")) \
        if isinstance(batch_def, dict) else None
    holder = config.get("requests") if isinstance(config, dict) else None
    items = holder.get("requests") if isinstance(holder, dict) else None
    if not isinstance(items, list) or not items:
        raise bad_request("batch.input_config.requests.requests: must be a non-empty list")
    if len(items) > state.config.batch_max_lines:
        raise bad_request(f"a batch may hold at most {state.config.batch_max_lines} requests")
    if not all(isinstance(i, dict) and isinstance(i.get("request"), dict) for i in items):
        raise bad_request("every inlined request needs a `request` object")
    store = request.app[GEMINI_BATCHES]
    batch_id = store.new_id()
    keys = [f"{batch_id}-{n}" for n in range(len(items))]
    batch = inline_batch.InlineBatch(batch_id, model, keys, time.time(), extra={
        "display_name": batch_def.get("display_name", batch_def.get("displayName")),
        "metadata": [i.get("metadata") or {} for i in items]})
    store.put(batch_id, batch)

    async def compute(params: Any) -> Completion:
        return await complete(state, parse_generate_request(model, params, state.models))

    inline_batch.start(request.app, batch, list(zip(keys, (i["request"] for i in items),
                                                    strict=True)),
                       compute, generate_body, _error_body)
    return json_response(operation(batch))


def _error_body(exc: SimError) -> dict[str, Any]:
    _, body, _ = render_error("/v1beta/", exc)
    return body


async def retrieve(request: web.Request) -> web.Response:
    """GET /v1beta/batches/{id}."""
    return json_response(operation(request.app[GEMINI_BATCHES].get(request.match_info["id"])))


async def list_batches(request: web.Request) -> web.Response:
    """GET /v1beta/batches?pageSize=&pageToken=: every batch operation, newest first; the
    token is the index to go on from."""
    batches = sorted(request.app[GEMINI_BATCHES].values(), key=lambda b: b.created_at,
                     reverse=True)
    try:
        size = max(1, min(int(request.query.get("pageSize") or 50), 1000))
        start = int(request.query.get("pageToken") or 0)
    except ValueError:
        raise SimError(400, "Invalid pageSize or pageToken.", outcome="bad_request") from None
    page = batches[start:start + size]
    body: dict[str, Any] = {"operations": [operation(b) for b in page]}
    if start + size < len(batches):
        body["nextPageToken"] = str(start + size)
    return json_response(body)


async def cancel(request: web.Request) -> web.Response:
    """POST /v1beta/batches/{id}:cancel: an empty answer, as the API gives."""
    batch = request.app[GEMINI_BATCHES].get(request.match_info["id"])
    if batch.phase == "ended":
        raise SimError(400, f"Batch batches/{batch.id} is already in a terminal state.",
                       outcome="bad_request")
    if batch.phase in ("pending", "running"):
        inline_batch.cancel(request.app, batch)
    return json_response({})
