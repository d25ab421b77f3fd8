"""The Gemini Batch API's shapes for inline requests, with no I/O (batch/inline.py sends them).

POST /v1beta/models/{model}:batchGenerateContent with {"batch": {"display_name", "input_config":
{"requests": {"requests": [{"request", "metadata": {"key"}}]}}}} (the whole body at most 20 MB
for inline requests) answers a long-running operation named batches/{id}; GET
/v1beta/batches/{id} reads it (metadata.state BATCH_STATE_PENDING | RUNNING | SUCCEEDED |
FAILED | CANCELLED | EXPIRED; the SDKs spell them JOB_STATE_*, both are read) and, once done,
its response.inlinedResponses.inlinedResponses[] ({"response"} or {"error"}, with the request's
metadata); POST /v1beta/batches/{id}:cancel. Per the Batch API guide
(https://ai.google.dev/gemini-api/docs/batch-api), batch requests cost 50% of the realtime price.
Results are normalized to the OpenAI result-line shape collect reads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from beam_caption.api.errors import ResponseError
from beam_caption.api.providers.gemini import model_id
from beam_caption.batch.wire import BatchInfo

# gRPC status codes (google.rpc.Code) as the HTTP statuses Google maps them to.
_GRPC_HTTP = {1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429, 9: 400,
              10: 409, 11: 400, 12: 501, 13: 500, 14: 503, 15: 500, 16: 401}
_STATES = {"PENDING": "validating", "RUNNING": "in_progress", "SUCCEEDED": "completed",
           "FAILED": "failed", "CANCELLED": "cancelled", "EXPIRED": "expired"}


def line(custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """One inline request of a batch (a shard line): the request_key rides in its metadata."""
    return {"request": body, "metadata": {"key": custom_id}}


def create_request(model: str, lines: list[dict[str, Any]], name: str) -> tuple[str, dict]:
    """(path, body) creating a batch of `lines` for `model`."""
    return (f"/v1beta/models/{model_id(model)}:batchGenerateContent",
            {"batch": {"display_name": name,
                       "input_config": {"requests": {"requests": lines}}}})


def batch_path(batch_id: str) -> str:
    """Where a batch (its operation, `batches/...`) is read."""
    return f"/v1beta/{batch_id}"


def cancel_path(batch_id: str) -> str:
    """Where a batch is cancelled."""
    return f"/v1beta/{batch_id}:cancel"


def list_path(page_token: str | None = None) -> str:
    """Where the account's batches are listed, newest first (what finds a batch by its display
    name: a create whose answer was lost)."""
    return "/v1beta/batches?pageSize=100" + (f"&pageToken={page_token}" if page_token else "")


def parse_list(data: Any) -> tuple[list[tuple[str | None, BatchInfo]], str | None]:
    """A list page -> ([(display name, batch)], the next page's token or None)."""
    if not isinstance(data, Mapping):
        return [], None
    found = []
    for item in data.get("operations") or ():
        if isinstance(item, Mapping) and isinstance(item.get("name"), str):
            name = _batch(item).get("displayName")
            found.append((name if isinstance(name, str) else None, parse_status(item)))
    token = data.get("nextPageToken")
    return found, token if isinstance(token, str) and token else None


def results_path(batch_id: str) -> str:
    """Inline results come with the batch itself."""
    return batch_path(batch_id)


def _batch(data: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = data.get("metadata")
    return meta if isinstance(meta, Mapping) else data


def parse_status(data: Any) -> BatchInfo:
    """A batch operation -> BatchInfo in OpenAI's status words (see _STATES)."""
    if not isinstance(data, Mapping) or not isinstance(data.get("name"), str):
        raise ResponseError("the Gemini Batch API answered without a batch name")
    batch = _batch(data)
    raw = str(batch.get("state") or "")
    state = raw.removeprefix("BATCH_STATE_").removeprefix("JOB_STATE_")
    status = _STATES.get(state, state.lower() or "validating")
    stats = batch.get("batchStats") if isinstance(batch.get("batchStats"), Mapping) else {}
    done = status in ("completed", "failed", "cancelled", "expired")
    return BatchInfo(id=data["name"], status=status,
                     output_file_id=data["name"] if done else None,
                     total=_int(stats.get("requestCount")),
                     completed=_int(stats.get("successfulRequestCount")),
                     failed=_int(stats.get("failedRequestCount")))


def parse_results(body: bytes) -> list[dict[str, Any]]:
    """The inline responses of a finished batch (the operation's JSON), normalized to OpenAI's
    result-line shape; a request with no entry gets no line (collect says why from the
    batch's final state)."""
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return []
    if not isinstance(raw, Mapping):
        return []
    holders = [raw.get("response"), _batch(raw).get("output")]
    items: Any = None
    for holder in holders:
        if isinstance(holder, Mapping) and isinstance(holder.get("inlinedResponses"), Mapping):
            items = holder["inlinedResponses"].get("inlinedResponses")
            break
    lines = []
    for item in items if isinstance(items, list) else ():
        meta = item.get("metadata") if isinstance(item, Mapping) else None
        key = meta.get("key") if isinstance(meta, Mapping) else None
        if not isinstance(key, str):
            continue
        if isinstance(item.get("response"), Mapping):
            lines.append({"custom_id": key, "response": {"status_code": 200,
                                                         "body": item["response"]}})
        elif isinstance(item.get("error"), Mapping):
            err = item["error"]
            code = err.get("code") if isinstance(err.get("code"), int) else 13
            # A google.rpc.Status carries a gRPC code; the parser classifies HTTP statuses.
            status = code if code >= 100 else _GRPC_HTTP.get(code, 500)
            lines.append({"custom_id": key, "response": {"status_code": status,
                                                         "body": {"error": err}}})
    return lines


def _int(value: Any) -> int:
    """Google's JSON sends int64 counts as strings."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return 0
    return max(0, number)
