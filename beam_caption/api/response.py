"""Parsing a chat-completions response, with no I/O: status, headers and body in; a ChatResult
out, or one ApiError subclass raised (api/errors.py), the way gidgethub's sansio module works.

It reads what servers really send, not only what the API reference documents: errors inside a
200 (OpenRouter), HTML pages from proxies, refusals, reasoning (api/answer.py), the renamed
request-id headers of gateways, and unknown fields anywhere, which are ignored. Whatever the
body, the outcome is a ChatResult or an ApiError: never another exception, never an empty or
wrong caption. tests/samples/cases/ holds one recorded response per case.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from beam_caption.api.answer import Answer, read_choice
from beam_caption.api.error_body import (
    JSON_ERRORS,
    ErrorInfo,
    body_error,
    display_code,
    error_info,
    is_html,
    page_error,
)
from beam_caption.api.errors import (
    ApiError,
    AuthError,
    BadRequest,
    ContentFiltered,
    EmptyAnswer,
    HtmlResponse,
    QuotaExceeded,
    RateLimited,
    Refused,
    ResponseError,
    ServerError,
)
from beam_caption.api.ratelimits import RateLimitInfo, parse_rate_limit_headers, retry_after_seconds
from beam_caption.api.usage import Usage, parse_usage
from beam_caption.redaction import mask_secrets

# Error messages are cut to this length: they land in Parquet rows and on one log line each.
MAX_MESSAGE_CHARS = 300

# Where the request id is, best first: the provider's own id as a LiteLLM proxy passes it on,
# the server's (OpenAI, Azure, vLLM with --enable-request-id-headers), the Anthropic spelling,
# then a gateway's id for the call (LiteLLM). The body's `id` (OpenRouter's generation id)
# comes after them all. `cf-ray` is Cloudflare's trace id of one hop, which no provider can
# look up: it is never a request id.
REQUEST_ID_HEADERS = ("llm_provider-x-request-id", "x-request-id", "llm_provider-request-id",
                      "request-id", "x-litellm-call-id")

# The status an error inside a 2xx body stands for when it carries a type but no number.
_TYPE_STATUS = {"invalid_request_error": 400, "authentication_error": 401,
                "permission_error": 403, "not_found_error": 404, "rate_limit_error": 429,
                "rate_limit_exceeded": 429, "insufficient_quota": 429, "server_error": 500,
                "overloaded_error": 529, "billing_error": 402, "api_error": 500,
                "request_too_large": 413, "timeout_error": 504}
_HTML_NOTE = "(an HTML page from a proxy or web server, not the API)"


@dataclass(frozen=True, slots=True)
class ChatResult:
    """A parsed successful answer."""

    caption: str
    finish_reason: str | None
    request_id: str | None
    model: str | None
    usage: Usage
    rate_limits: RateLimitInfo


@dataclass(frozen=True)
class _Reply:
    """What every outcome of one response shares."""

    status: int
    headers: dict[str, str]
    request_id: str | None
    rate_limits: RateLimitInfo
    now: float | None

    def bad(self, why: str) -> ResponseError:
        """The retryable error of a 2xx that is not a usable answer."""
        return ResponseError(_safe(f"HTTP {self.status}: {why}"), status=self.status,
                             request_id=self.request_id, rate_limits=self.rate_limits)


# What the provider adapters (api/providers/) build their outcomes from.
Reply = _Reply

# Bearer tokens, OpenAI/Anthropic keys (sk-, sk-ant-) and Google API keys (AIza...).
_SECRET = re.compile(r"(?i)(bearer\s+)\S+|\b(sk-)[A-Za-z0-9_\-]{6,}[A-Za-z0-9_\-*]*"
                     r"|\b(AIza)[0-9A-Za-z_\-]{20,}")


def _safe(text: str) -> str:
    """One line, at most MAX_MESSAGE_CHARS, with anything shaped like a key or token masked.

    Our own messages never hold the key, but a misbehaving server might echo it back: the
    exact keys this process resolved are masked too, whatever their shape.
    """
    text = _SECRET.sub(lambda m: (m.group(1) or m.group(2) or m.group(3)) + "***", text)
    text = " ".join(mask_secrets(text).split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


def _text(value: Any) -> str | None:
    """A non-blank string as sent, else None (servers send null, numbers, "" and worse)."""
    return value if isinstance(value, str) and value.strip() else None


def _error_class(status: int, code: str | None, etype: str | None) -> type[ApiError]:
    if status == 429:
        return QuotaExceeded if "insufficient_quota" in (code, etype) else RateLimited
    if status == 402 or "billing_error" in (code, etype):
        return QuotaExceeded  # Anthropic: no credit left; never retried
    if status in (401, 403):
        return AuthError
    if status >= 500:
        return ServerError
    if status in (408, 409):
        return ApiError  # retryable by status; not a BadRequest, which never is
    if 400 <= status < 500:
        return BadRequest
    return ApiError  # 1xx/3xx: a misconfigured base URL or proxy, not worth retrying


def _api_error(reply: _Reply, status: int, info: ErrorInfo, label: str) -> ApiError:
    """The ApiError that `status` and the error's code and type call for."""
    tag = display_code(info)
    label += f" ({tag})" if tag else ""
    message = f"{info.message or 'an HTML page'} {_HTML_NOTE}" if info.html else info.message
    code = info.code or info.etype
    return _error_class(status, code, info.etype)(
        _safe(f"{label}: {message}" if message else label), status=status, code=code,
        retry_after=retry_after_seconds(reply.headers, message, reply.now),
        request_id=reply.request_id, rate_limits=reply.rate_limits)


def _embedded_error(reply: _Reply, err: Any) -> ApiError:
    """An error object inside a 2xx body (OpenRouter commits to 200 before the upstream
    answers): classified by the status its code or type names, else a retryable bad_response."""
    info = error_info(err)
    number = info.number if info.number is not None and 400 <= info.number < 600 else None
    status = number or _TYPE_STATUS.get(info.etype or "") or _TYPE_STATUS.get(info.code or "")
    if status is None:
        return reply.bad(f"an error in a successful response: {info.message or 'no detail'}")
    return _api_error(reply, status, info, f"HTTP {reply.status} with error {status} inside")


def _unusable(reply: _Reply, answer: Answer, usage: Usage) -> ApiError | None:
    """The error an answer is, when it is no caption; None for a caption."""
    billed = {"status": reply.status, "request_id": reply.request_id,
              "rate_limits": reply.rate_limits, "usage": usage}
    reason = answer.finish_reason
    if reason == "error":
        return reply.bad("the generation failed on the server (finish_reason error)")
    if reason == "content_filter":
        return ContentFiltered("the provider's content filter withheld the answer",
                               code="content_filter", **billed)
    if answer.refusal or reason == "refusal":
        text = answer.refusal or answer.text or "the model refused (finish_reason refusal)"
        return Refused(_safe(text), code="refusal", **billed)
    if answer.text:
        return None
    if reason == "length":
        spent = f" ({usage.reasoning_tokens} reasoning tokens)" if usage.reasoning_tokens else ""
        why = (f"the output cap was reached before the answer began{spent}; raise "
               "--max-output-tokens")
    else:
        what = "only reasoning" if answer.reasoning_set_aside else "no text"
        why = f"the model returned {what} (finish_reason {reason})"
    return EmptyAnswer(f"no answer text: {why}", code="empty_answer", **billed)


def decode_body(reply: Reply, body: bytes) -> Mapping[str, Any]:
    """A 2xx body as a JSON object; raises HtmlResponse for a proxy's page and a retryable
    ResponseError for anything else that is not one (truncated, corrupted, not an object)."""
    try:
        data = json.loads(body)
    except JSON_ERRORS:
        if is_html(reply.headers, body):
            page = page_error(body, reply.headers).message or "untitled"
            raise HtmlResponse(_safe(
                f"HTTP {reply.status}: an HTML page ({page}) instead of the API's JSON: a "
                "proxy's sign-in or portal page, or a --base-url that is not the API"),
                status=reply.status, request_id=reply.request_id,
                rate_limits=reply.rate_limits) from None
        raise reply.bad("the body is not valid JSON (truncated or corrupted)") from None
    if not isinstance(data, Mapping):
        raise reply.bad("the body is not a JSON object")
    return data


def api_error(reply: Reply, status: int, info: ErrorInfo, *, label: str | None = None,
              retry_after: float | None = None,
              cls: type[ApiError] | None = None) -> ApiError:
    """The typed ApiError of an error answer (`info`: what its body said), classified by
    `status` and the error's code and type unless `cls` says otherwise; `retry_after`
    overrides the hint read from the headers and the message."""
    error = _api_error(reply, status, info, label or f"HTTP {status}")
    if retry_after is not None:
        error.retry_after = retry_after
    if cls is not None and type(error) is not cls:
        error = cls(error.message, status=error.status, code=error.code,
                    retry_after=error.retry_after, request_id=error.request_id,
                    rate_limits=error.rate_limits)
    return error


def answer_result(reply: Reply, answer: Answer, usage: Usage, model: str | None) -> ChatResult:
    """The ChatResult of a read answer, or the error it is (refusal, content filter, an empty
    or unfinished answer): every provider's answer is judged by the same rules."""
    error = _unusable(reply, answer, usage)
    if error is not None:
        raise error
    return ChatResult(answer.text, answer.finish_reason, reply.request_id, model, usage,
                      reply.rate_limits)


def _success(reply: _Reply, body: bytes) -> ChatResult:
    data = decode_body(reply, body)
    reply = dataclasses.replace(reply, request_id=reply.request_id or _text(data.get("id")))
    if data.get("error"):
        # An error object is the server's word that this is no answer, whatever else is there.
        raise _embedded_error(reply, data["error"])
    choices = data.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    if not isinstance(choice, Mapping):
        raise reply.bad("the response has no choices")
    if choice.get("error"):
        raise _embedded_error(reply, choice["error"])  # OpenRouter: finish_reason "error"
    usage = parse_usage(data.get("usage"))
    answer = read_choice(choice)
    error = _unusable(reply, answer, usage)
    if error is not None:
        raise error
    return ChatResult(answer.text, answer.finish_reason, reply.request_id,
                      _text(data.get("model")), usage, reply.rate_limits)


def safe_message(text: str) -> str:
    """`text` fit for an error row: one line, cut to MAX_MESSAGE_CHARS, key-shaped text masked."""
    return _safe(text)


def error_class(status: int, code: str | None = None, etype: str | None = None
                ) -> type[ApiError]:
    """The ApiError subclass an HTTP error status (and its code or type) calls for: the one
    classification the provider adapters (api/providers/) share."""
    return _error_class(status, code, etype)


def request_id_of(headers: Mapping[str, str]) -> str | None:
    """The request id in lower-cased `headers`, by REQUEST_ID_HEADERS' order; None if none."""
    for name in REQUEST_ID_HEADERS:
        value = _text(headers.get(name))
        if value is not None:
            return value.strip()
    return None


def parse_response(status: int, headers: Mapping[str, str], body: bytes, *,
                   now: float | None = None) -> ChatResult:
    """A ChatResult for a good 2xx answer; otherwise raises the matching ApiError subclass.

    `now` (epoch seconds, default the clock) is what a Retry-After date is measured from.
    """
    h = {str(k).lower(): str(v) for k, v in headers.items()}
    reply = _Reply(status, h, request_id_of(h), parse_rate_limit_headers(h), now)
    if 200 <= status < 300:
        return _success(reply, body)
    info = body_error(body, h)
    raise _api_error(reply, status, info, f"HTTP {status}")
