"""Sans-I/O chat-completions client: request building, response parsing, the error taxonomy.

Plain functions over dicts and bytes, no sockets (the gidgethub "sansio" pattern): the engine sends
the body that `build_request` returns and hands the status, headers and body it got back to
`parse_response`, which returns a `ChatResult` or raises one `ApiError` subclass. `is_retryable` is
the one predicate that decides what is retried, so exactly one retry layer exists.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

# The header side of rate limiting lives in limits.py; re-exported here because callers read it
# off responses.
from beam_caption.api.errors import (
    ApiError,
    AuthError,
    BadRequest,
    ContentFiltered,
    QuotaExceeded,
    RateLimited,
    ResponseError,
    ServerError,
    Timeout,
    TransportError,
)
from beam_caption.api.limits import RateLimitInfo, parse_rate_limit_headers, retry_after_seconds
from beam_caption.api.limits import parse_duration as parse_duration
from beam_caption.errors import ConfigError

DETAILS = ("auto", "low", "high")
TOKEN_PARAMS = ("max_completion_tokens", "max_tokens")
# Error messages are cut to this length: they land in Parquet rows and on one log line each.
MAX_MESSAGE_CHARS = 300


@dataclass(frozen=True)
class RequestSettings:
    """Everything that shapes a request except the image; validated once, then shared."""

    model: str
    prompt: str
    system_prompt: str | None = None
    detail: str = "auto"
    max_output_tokens: int = 60
    temperature: float | None = None
    # GPT-5-family and o-series models reject `max_tokens`; old OpenAI-compatible servers only
    # know `max_tokens`.
    token_param: str = "max_completion_tokens"
    response_format: dict | None = None
    extra_body: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if not self.model:
            raise ConfigError("a model name is required")
        if self.detail not in DETAILS:
            raise ConfigError(f"detail must be one of {', '.join(DETAILS)}, not {self.detail!r}")
        if self.token_param not in TOKEN_PARAMS:
            raise ConfigError(f"token_param must be one of {', '.join(TOKEN_PARAMS)}")
        if self.max_output_tokens < 1:
            raise ConfigError("max_output_tokens must be at least 1")
        clash = {key for key, _ in self.extra_body} & {"model", "messages"}
        if clash:
            raise ConfigError(f"extra body parameters may not override {sorted(clash)}")

    def key_params(self, prompt: str | None = None) -> dict[str, Any]:
        """The generation parameters that make two requests for one image the same request.

        Pass the result to `request_key`; `prompt` overrides the settings' prompt as in
        `build_request`.
        """
        return {
            "model": self.model,
            "prompt": prompt or self.prompt,
            "system_prompt": self.system_prompt,
            "detail": self.detail,
            "max_output_tokens": self.max_output_tokens,
            "temperature": self.temperature,
            "response_format": self.response_format,
            "extra_body": dict(self.extra_body),
        }


def build_request(settings: RequestSettings, jpeg: bytes, prompt: str | None = None) -> dict:
    """The chat.completions body for one image: an optional system message, then text and image.

    The text comes before the image so that requests share a prefix the provider can cache.
    """
    messages: list[dict[str, Any]] = []
    if settings.system_prompt:
        messages.append({"role": "system", "content": settings.system_prompt})
    data_url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
    messages.append({
        "role": "user",
        "content": [
            {"type": "text", "text": prompt or settings.prompt},
            {"type": "image_url", "image_url": {"url": data_url, "detail": settings.detail}},
        ],
    })
    body: dict[str, Any] = {"model": settings.model, "messages": messages,
                            settings.token_param: settings.max_output_tokens}
    if settings.temperature is not None:
        body["temperature"] = settings.temperature
    if settings.response_format is not None:
        body["response_format"] = settings.response_format
    body.update(settings.extra_body)
    return body


def request_key(image_id: str, params: Mapping[str, Any]) -> str:
    """sha256 hex of `image_id`, a newline, and the canonical JSON of `params`.

    Canonical = sorted keys, no spaces, UTF-8: the same image with the same settings gives the same
    key in every process and every run, which is what skip-done and dedupe compare.
    """
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{image_id}\n{canonical}".encode()).hexdigest()


@dataclass(frozen=True)
class Usage:
    """Tokens the provider billed for one response."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0


def _int(value: Any) -> int:
    """A token count as int; None, junk and negatives count as 0 (servers omit or null fields)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int | float) and math.isfinite(value):
        return max(0, int(value))
    return 0


def parse_usage(obj: Mapping | None) -> Usage:
    """The one place usage is parsed; tolerant of missing or null details."""
    if not isinstance(obj, Mapping):
        return Usage()
    prompt = _int(obj.get("prompt_tokens"))
    completion = _int(obj.get("completion_tokens"))
    prompt_details = obj.get("prompt_tokens_details")
    completion_details = obj.get("completion_tokens_details")
    cached = _int(prompt_details.get("cached_tokens")) if isinstance(prompt_details, Mapping) else 0
    if not cached:
        # DeepSeek-style servers report cache hits at the top level instead.
        cached = _int(obj.get("prompt_cache_hit_tokens"))
    reasoning = (_int(completion_details.get("reasoning_tokens"))
                 if isinstance(completion_details, Mapping) else 0)
    total = _int(obj.get("total_tokens")) or prompt + completion
    return Usage(prompt, completion, total, cached, reasoning)


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


def as_api_error(error: BaseException) -> ApiError | None:
    """The ApiError for a transport exception (timeouts, aiohttp connection errors), else None.

    The message names only the exception type, never the request.
    """
    if isinstance(error, ApiError):
        return error
    if isinstance(error, TimeoutError):
        return Timeout("the request timed out")
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        return None  # a certificate problem does not fix itself on retry
    if isinstance(error, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError
                  | ConnectionError):
        return TransportError(f"connection error ({type(error).__name__})")
    return None


def is_retryable(error: BaseException) -> bool:
    """The one retry predicate: True for failures that a later identical request may not repeat."""
    if isinstance(error, QuotaExceeded | BadRequest | AuthError | ContentFiltered):
        return False
    if isinstance(error, RateLimited | ServerError | TransportError | ResponseError):
        return True
    if isinstance(error, ApiError):
        if error.status == 429:
            return error.code != "insufficient_quota"
        return error.status in (408, 409) or (error.status or 0) >= 500
    return as_api_error(error) is not None
