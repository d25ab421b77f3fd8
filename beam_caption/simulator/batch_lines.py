"""Batch input lines: parse and check a JSONL input file, and run one line to its result line.

Input lines are {"custom_id", "method": "POST", "url", "body"}; result lines are
{"id", "custom_id", "response": {"status_code", "request_id", "body"} | null, "error": ... | null}
as the real API writes them (failed requests go to the error file).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from beam_caption.simulator.apierror import SimError
from beam_caption.simulator.completion import Completion, compute
from beam_caption.simulator.state import SimState
from beam_caption.simulator.wire import loads


@dataclass(frozen=True)
class BatchLine:
    """One input line; `malformed` says why it cannot run (it then goes to the error file)."""

    number: int  # 1-based line number in the file
    custom_id: str | None
    body: dict[str, Any] | None
    model: str | None
    malformed: str | None = None


@dataclass
class LineResult:
    """The result line of one input line, with what the ledger needs to bill it."""

    ok: bool
    line: dict[str, Any]
    model: str | None = None
    usage: dict[str, Any] | None = None
    images: list[str] = field(default_factory=list)
    done_at: float = 0.0


def _problem(code: str, message: str, line: int | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": None, "line": line}


def split_lines(data: bytes, max_lines: int,
                endpoint: str) -> tuple[list[BatchLine], dict[str, Any] | None]:
    """Parse the input file; the second value is a whole-file problem that fails the batch."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return [], _problem("invalid_file_format", "The input file is not UTF-8 encoded JSONL.")
    raw = [(n, s) for n, s in enumerate(text.splitlines(), start=1) if s.strip()]
    if not raw:
        return [], _problem("empty_file", "The input file contains no requests.")
    if len(raw) > max_lines:
        return [], _problem("too_many_lines", f"The input file has {len(raw)} requests; a batch "
                            f"may hold at most {max_lines}.")
    lines = [_parse_line(n, s, endpoint) for n, s in raw]
    seen: set[str] = set()
    for line in lines:
        if line.custom_id is not None:
            if line.custom_id in seen:
                return [], _problem("duplicate_custom_id", f"The custom_id "
                                    f"'{line.custom_id}' appears more than once; each line "
                                    "needs a unique custom_id.", line.number)
            seen.add(line.custom_id)
    models = sorted({line.model for line in lines if line.model})
    if len(models) > 1:
        return [], _problem("mismatched_model", "Every request of a batch must use the same "
                            f"model; this file uses {', '.join(models)}.")
    return lines, None


def _parse_line(number: int, text: str, endpoint: str) -> BatchLine:
    try:
        item = loads(text)
    except ValueError:
        return BatchLine(number, None, None, None, "This line is not valid JSON.")
    if not isinstance(item, dict):
        return BatchLine(number, None, None, None, "This line is not a JSON object.")
    cid = item.get("custom_id")
    cid = cid if isinstance(cid, str) else None
    body = item.get("body")
    model = body.get("model") if isinstance(body, dict) else None
    model = model if isinstance(model, str) else None
    reason = None
    if cid is None:
        reason = "Missing or non-string 'custom_id'."
    elif item.get("method") != "POST":
        reason = "Invalid 'method': only 'POST' is supported."
    elif item.get("url") != endpoint:
        reason = f"Invalid 'url': this batch's endpoint is {endpoint}."
    elif not isinstance(body, dict):
        reason = "Missing or non-object 'body'."
    return BatchLine(number, cid, body if isinstance(body, dict) else None, model, reason)


async def run_line(state: SimState, line: BatchLine) -> LineResult:
    """Compute one line's result (successes and API errors alike; nothing is billed here)."""
    if line.malformed is not None or line.body is None:
        return _error_line(line, "invalid_request", f"Line {line.number}: {line.malformed}")
    try:
        done = await compute(state, line.body)
    except SimError as exc:
        return _response_line(line, exc.status, exc.body())
    return _response_line(line, 200, done.body(), done)


def expired_line(line: BatchLine) -> LineResult:
    """The error-file line of a request the completion window closed on before it ran."""
    return _error_line(line, "batch_expired", "This request could not be executed before the "
                                              "completion window expired.")


def _line_id() -> str:
    return f"batch_req_{uuid.uuid4().hex[:24]}"


def _error_line(line: BatchLine, code: str, message: str) -> LineResult:
    """A line that got no response: "error" says why (the error file)."""
    return LineResult(False, {"id": _line_id(), "custom_id": line.custom_id, "response": None,
                              "error": {"code": code, "message": message}})


def _response_line(line: BatchLine, status: int, body: dict[str, Any],
                   done: Completion | None = None) -> LineResult:
    """A line that got a response: `done`'s answer (billable), or an API error's body."""
    response = {"status_code": status, "request_id": f"req_{uuid.uuid4().hex}", "body": body}
    result = {"id": _line_id(), "custom_id": line.custom_id, "response": response,
              "error": None}
    if done is None:
        return LineResult(False, result)
    return LineResult(True, result, done.request.model, body["usage"], done.image_hashes)
