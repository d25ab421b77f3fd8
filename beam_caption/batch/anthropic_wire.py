"""Anthropic's Message Batches API shapes, with no I/O (batch/inline.py sends them).

POST /v1/messages/batches {"requests": [{"custom_id", "params"}]} (at most 100,000 requests or
256 MB), GET /v1/messages/batches/{id} (processing_status in_progress | canceling | ended,
request_counts processing/succeeded/errored/canceled/expired), POST .../cancel, and the results
(JSONL at .../results: {"custom_id", "result": {"type": succeeded | errored | canceled |
expired, ...}}). Results are normalized to the OpenAI result-line shape collect reads:
{"custom_id", "response": {"status_code", "body"}} or {"custom_id", "error": {"code", ...}}.
Batch requests are billed at half price.
"""

from __future__ import annotations

import datetime
from typing import Any

from beam_caption.api.errors import ResponseError
from beam_caption.api.providers.anthropic import _TYPE_STATUS
from beam_caption.api.providers.base import count
from beam_caption.batch.wire import BatchInfo, parse_jsonl

ENDPOINT = "/v1/messages/batches"


def line(custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """One request of a batch (a shard line)."""
    return {"custom_id": custom_id, "params": body}


def create_request(model: str, lines: list[dict[str, Any]], name: str) -> tuple[str, dict]:
    """(path, body) creating a batch of `lines` (the model is in each request's params)."""
    return ENDPOINT, {"requests": lines}


def batch_path(batch_id: str) -> str:
    """Where a batch is read."""
    return f"{ENDPOINT}/{batch_id}"


def cancel_path(batch_id: str) -> str:
    """Where a batch is cancelled."""
    return f"{ENDPOINT}/{batch_id}/cancel"


def results_path(batch_id: str) -> str:
    """Where a batch's results are read (the results_url's path; its host is never followed:
    the key goes only to the configured base URL)."""
    return f"{ENDPOINT}/{batch_id}/results"


def parse_status(data: Any) -> BatchInfo:
    """A Message Batch object -> BatchInfo in OpenAI's status words: in_progress, cancelling,
    or, once ended, expired (some requests expired), cancelled (some were cancelled) or
    completed. Its `output_file_id` is the batch id, from which the results are read."""
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) \
            or not isinstance(data.get("processing_status"), str):
        raise ResponseError("the Message Batches API answered without an id and status")
    counts = data.get("request_counts") if isinstance(data.get("request_counts"), dict) else {}
    c = {k: count(counts.get(k)) for k in ("processing", "succeeded", "errored", "canceled",
                                            "expired")}
    phase = data["processing_status"]
    status = {"in_progress": "in_progress", "canceling": "cancelling"}.get(phase, phase)
    if phase == "ended":
        status = "expired" if c["expired"] else "cancelled" if c["canceled"] else "completed"
    return BatchInfo(id=data["id"], status=status,
                     output_file_id=data["id"] if phase == "ended" else None,
                     created_at=_epoch(data.get("created_at")), total=sum(c.values()),
                     completed=c["succeeded"],
                     failed=c["errored"] + c["canceled"] + c["expired"])


def parse_results(raw: bytes) -> list[dict[str, Any]]:
    """The results JSONL, normalized to OpenAI's result-line shape (see the module docstring)."""
    return [_normalized(item) for item in parse_jsonl(raw.splitlines())
            if isinstance(item.get("custom_id"), str)]


def _normalized(item: dict[str, Any]) -> dict[str, Any]:
    result = item.get("result") if isinstance(item.get("result"), dict) else {}
    kind = result.get("type")
    custom_id = item["custom_id"]
    if kind == "succeeded":
        return {"custom_id": custom_id, "response": {"status_code": 200,
                                                     "body": result.get("message")}}
    if kind == "errored":
        body = result.get("error") if isinstance(result.get("error"), dict) else {}
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        status = _TYPE_STATUS.get(str(inner.get("type")), 500)
        return {"custom_id": custom_id, "response": {"status_code": status, "body": body}}
    code = {"canceled": "batch_cancelled", "expired": "batch_expired"}.get(str(kind),
                                                                          "batch_failed")
    return {"custom_id": custom_id, "error": {"code": code,
                                              "message": f"the request was {kind or 'lost'}"}}


def _epoch(value: Any) -> int:
    if not isinstance(value, str):
        return 0
    try:
        return int(datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0

