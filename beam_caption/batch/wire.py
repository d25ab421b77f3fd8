"""The Files and Batch API's request and response shapes, with no I/O (batch/api.py sends them).

Plain functions over dicts and bytes, unit-tested without a socket: a Batch object parsed into
`BatchInfo`, the create body, the multipart upload frame, result-file lines, and any answer's
error classified the way the chat parser classifies it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from beam_caption.api.errors import ApiError, ResponseError
from beam_caption.api.response import parse_response as _parse_chat_response

ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"
# A batch in one of these states will not change any more.
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})


@dataclass(frozen=True)
class BatchInfo:
    """The fields of a Batch object that beam-caption acts on."""

    id: str
    status: str
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int = 0
    total: int = 0
    completed: int = 0
    failed: int = 0
    errors: tuple[str, ...] = field(default_factory=tuple)

    @property
    def terminal(self) -> bool:
        """True once the batch will not change any more (completed, failed, expired, cancelled)."""
        return self.status in TERMINAL

    @property
    def counts(self) -> dict[str, int]:
        """request_counts as a dict."""
        return {"total": self.total, "completed": self.completed, "failed": self.failed}


def parse_batch(data: Any) -> BatchInfo:
    """A Batch object (decoded JSON) -> BatchInfo; raises ResponseError on a malformed one."""
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) \
            or not isinstance(data.get("status"), str):
        raise ResponseError("the Batch API answered without a batch id and status")
    counts = data.get("request_counts") if isinstance(data.get("request_counts"), dict) else {}
    problems = data.get("errors", {}).get("data") if isinstance(data.get("errors"), dict) else None
    errors = tuple(f"{p.get('code')}: {p.get('message')}" for p in problems or ()
                   if isinstance(p, dict))

    def text(key: str) -> str | None:
        value = data.get(key)
        return value if isinstance(value, str) and value else None

    return BatchInfo(id=data["id"], status=data["status"], input_file_id=text("input_file_id"),
                     output_file_id=text("output_file_id"), error_file_id=text("error_file_id"),
                     created_at=_count(data.get("created_at")), total=_count(counts.get("total")),
                     completed=_count(counts.get("completed")),
                     failed=_count(counts.get("failed")), errors=errors)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def create_body(input_file_id: str, metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """The POST /v1/batches body for a chat-completions batch with a 24 h window."""
    body: dict[str, Any] = {"input_file_id": input_file_id, "endpoint": ENDPOINT,
                            "completion_window": COMPLETION_WINDOW}
    if metadata:
        body["metadata"] = dict(metadata)
    return body


def multipart_frame(filename: str, purpose: str = "batch",
                    boundary: str | None = None) -> tuple[bytes, bytes, str]:
    """(head, tail, content type) of a multipart/form-data upload; the file's bytes go between.

    Split this way so a 200 MB shard streams from storage instead of being held in memory.
    """
    boundary = boundary or uuid.uuid4().hex
    safe_name = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'
            f"{purpose}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f'filename="{safe_name}"\r\nContent-Type: application/jsonl\r\n\r\n').encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head, tail, f"multipart/form-data; boundary={boundary}"


def parse_jsonl(lines: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """The JSON objects of a result file; blank and unparseable lines are skipped.

    An unparseable line cannot be matched to a request; its request then counts as missing and
    collect writes an error row for it from the batch's status.
    """
    for raw in lines:
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            continue
        if isinstance(item, dict):
            yield item


def check_answer(status: int, headers: dict[str, str], body: bytes) -> Any:
    """The decoded JSON of a 2xx answer; raises the typed ApiError of any other answer.

    Error bodies have the same shape on every endpoint, so the chat client's parser classifies
    them (its message is safe to show and never holds the key).
    """
    if not 200 <= status < 300:
        _parse_chat_response(status, headers, body)  # always raises for a non-2xx status
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ResponseError(f"HTTP {status}: the body is not valid JSON", status=status) from None


def ambiguous(error: ApiError) -> bool:
    """True when the server may have acted on the request although we got no answer."""
    return error.status is None or error.status >= 500 or error.status == 408


def shard_metadata(run_id: str, index: int) -> dict[str, str]:
    """The metadata a shard's batch is created with (and an inline batch's name is made of)."""
    return {"beam_caption_run": run_id, "beam_caption_shard": str(index)}


def batch_name(metadata: dict[str, str]) -> str:
    """An inline batch's display name: beam-caption-<run id>-<shard index>."""
    return "-".join(["beam-caption", *(metadata[k] for k in sorted(metadata))])
