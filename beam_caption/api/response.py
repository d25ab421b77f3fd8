"""Parsing a chat-completions response, with no I/O: status, headers and body in; a ChatResult
out, or one ApiError subclass raised (api/errors.py), the way gidgethub's sansio module works.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from beam_caption.api.errors import (
    ApiError,
    AuthError,
    BadRequest,
    ContentFiltered,
    QuotaExceeded,
    RateLimited,
    ResponseError,
    ServerError,
)
from beam_caption.api.ratelimits import RateLimitInfo, parse_rate_limit_headers, retry_after_seconds
from beam_caption.api.usage import Usage, parse_usage

# Error messages are cut to this length: they land in Parquet rows and on one log line each.
MAX_MESSAGE_CHARS = 300


@dataclass(frozen=True)
class ChatResult:
    """A parsed successful answer."""

    caption: str
    finish_reason: str | None
    request_id: str | None
    model: str | None
    usage: Usage
    rate_limits: RateLimitInfo


_SECRET = re.compile(r"(?i)(bearer\s+)\S+|\b(sk-)[A-Za-z0-9_\-]{6,}[A-Za-z0-9_\-*]*")


def _safe(text: str) -> str:
    """One line, at most MAX_MESSAGE_CHARS, with anything shaped like a key or token masked.

    Our own messages never hold the key, but a misbehaving server might echo it back.
    """
    text = _SECRET.sub(lambda m: (m.group(1) or m.group(2)) + "***", text)
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


def _error_class(status: int, code: str | None, etype: str | None) -> type[ApiError]:
    if status == 429:
        return QuotaExceeded if "insufficient_quota" in (code, etype) else RateLimited
    if status in (401, 403):
        return AuthError
    if status >= 500:
        return ServerError
    if status in (408, 409):
        return ApiError  # retryable by status; not a BadRequest, which never is
    if 400 <= status < 500:
        return BadRequest
    return ApiError  # 1xx/3xx: a misconfigured base URL or proxy, not worth retrying


def _decode_error(body: bytes) -> tuple[str | None, str | None, str | None, int | None]:
    """(message, code, type, numeric code) from an error body of any common server's shape."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        text = body.decode("utf-8", "replace")
        title = re.search(r"<title>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
        snippet = title.group(1) if title else re.sub(r"<[^>]+>", " ", text)
        return (snippet.strip() or None), None, None, None
    if not isinstance(data, dict):
        return None, None, None, None
    # OpenAI and llama.cpp: {"error": {...}}; Ollama: {"error": "..."}; old vLLM: flat.
    err = data.get("error", data)
    if isinstance(err, str):
        return err, None, None, None
    if not isinstance(err, dict):
        return None, None, None, None
    raw_code = err.get("code")
    code = raw_code if isinstance(raw_code, str) else None
    number = raw_code if isinstance(raw_code, int) and not isinstance(raw_code, bool) else None
    etype = err.get("type") if isinstance(err.get("type"), str) else None
    message = err.get("message") if isinstance(err.get("message"), str) else None
    if message is None and isinstance(err.get("detail"), str):
        message = err["detail"]  # FastAPI-style servers
    return message, code, etype, number


def _error(status: int, h: dict[str, str], body: bytes, request_id: str | None,
           rate_limits: RateLimitInfo) -> ApiError:
    message, code, etype, _ = _decode_error(body)
    label = f"HTTP {status}" + (f" ({code or etype})" if code or etype else "")
    return _error_class(status, code, etype)(
        _safe(f"{label}: {message}" if message else label), status=status, code=code or etype,
        retry_after=retry_after_seconds(h, message), request_id=request_id,
        rate_limits=rate_limits)


def _content_text(content: Any) -> str:
    """Message content as text: a string, or the text parts of a list some servers return."""
    if isinstance(content, str):
        return content.strip()
    if isinstance(content, list):
        parts = [p.get("text", "") for p in content if isinstance(p, dict)]
        return "".join(p for p in parts if isinstance(p, str)).strip()
    return ""


def _success(status: int, h: dict[str, str], body: bytes, request_id: str | None,
             rate_limits: RateLimitInfo) -> ChatResult:
    def bad(why: str) -> ResponseError:
        return ResponseError(f"HTTP {status}: {why}", status=status, request_id=request_id,
                             rate_limits=rate_limits)

    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise bad("the body is not valid JSON (truncated or corrupted)") from None
    if not isinstance(data, dict):
        raise bad("the body is not a JSON object")
    request_id = request_id or (data.get("id") if isinstance(data.get("id"), str) else None)
    choices = data.get("choices")
    if not choices and data.get("error"):
        # Some gateways answer 200 with an error body; classify it by the code it carries.
        _, _, _, number = _decode_error(body)
        if number is not None and 400 <= number < 600:
            raise _error(number, h, body, request_id, rate_limits)
        message, *_ = _decode_error(body)
        raise bad(_safe(f"error in a successful response: {message}"))
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise bad("the response has no choices")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    finish_reason = choice.get("finish_reason")
    finish_reason = finish_reason if isinstance(finish_reason, str) else None
    usage = parse_usage(data.get("usage"))
    if finish_reason == "content_filter":
        raise ContentFiltered("the provider's content filter withheld the answer", status=status,
                              code="content_filter", request_id=request_id,
                              rate_limits=rate_limits, usage=usage)
    model = data.get("model") if isinstance(data.get("model"), str) else None
    return ChatResult(_content_text(message.get("content")), finish_reason, request_id, model,
                      usage, rate_limits)


def parse_response(status: int, headers: Mapping[str, str], body: bytes) -> ChatResult:
    """A ChatResult for a good 2xx answer; otherwise raises the matching ApiError subclass."""
    h = {str(k).lower(): str(v) for k, v in headers.items()}
    request_id = h.get("x-request-id")
    rate_limits = parse_rate_limit_headers(h)
    if 200 <= status < 300:
        return _success(status, h, body, request_id, rate_limits)
    raise _error(status, h, body, request_id, rate_limits)
