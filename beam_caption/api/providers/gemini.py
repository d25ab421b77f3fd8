"""Google's native Gemini API (`--provider gemini`), with no I/O.

Request: POST {base}/v1beta/models/{model}:generateContent with the key in `x-goog-api-key`,
`contents[].parts[]` of {"text"} and {"inline_data": {"mime_type", "data"}}, the output cap as
generationConfig.maxOutputTokens. Answer: candidates[0].content.parts[].text (parts marked
`thought` never read), finishReason (STOP, MAX_TOKENS, SAFETY, ...), promptFeedback.blockReason
when the prompt itself was blocked, usageMetadata (api/usage.py). Errors: {"error": {"code",
"message", "status", "details"}}; a 429 RESOURCE_EXHAUSTED carries its wait in a
google.rpc.RetryInfo detail ("retryDelay": "12s"); a per-day quota (QuotaFailure) is terminal.
Gemini sends no rate-limit headers. tests/samples/gemini/ holds one recorded body per case.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from beam_caption.api.answer import Answer, strip_reasoning
from beam_caption.api.error_body import ErrorInfo, body_error
from beam_caption.api.errors import ApiError, AuthError, ContentFiltered, QuotaExceeded
from beam_caption.api.providers.base import b64, lower_headers
from beam_caption.api.ratelimits import RateLimitInfo, parse_duration, retry_after_seconds
from beam_caption.api.request import RequestSettings, as_images
from beam_caption.api.response import (
    ChatResult,
    Reply,
    answer_result,
    api_error,
    decode_body,
    request_id_of,
    safe_message,
)
from beam_caption.api.usage import parse_gemini_usage
from beam_caption.errors import ConfigError

# finishReason -> OpenAI's terms. The safety family is the provider's filter (billed, terminal).
_FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter",
           "RECITATION": "content_filter", "BLOCKLIST": "content_filter",
           "PROHIBITED_CONTENT": "content_filter", "SPII": "content_filter",
           "IMAGE_SAFETY": "content_filter", "LANGUAGE": "language", "OTHER": "other",
           "MALFORMED_FUNCTION_CALL": "error"}
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_QUOTA_FAILURE = "type.googleapis.com/google.rpc.QuotaFailure"
_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
# ErrorInfo reasons that mean the key itself is wrong (Gemini answers 400 for a bad key).
_BAD_KEY = frozenset({"API_KEY_INVALID", "API_KEY_SERVICE_BLOCKED"})


class GeminiProvider:
    """Gemini through generateContent."""

    name = "gemini"
    default_base_url = "https://generativelanguage.googleapis.com"
    default_model = "gemini-2.5-flash-lite"
    key_env = "GEMINI_API_KEY"
    base_url_env = "GEMINI_BASE_URL"
    # Inline batch requests: the whole batchGenerateContent body is limited to 20 MB; the line
    # count is ours (results come back inline, in order).
    batch_max_lines = 10_000
    batch_max_bytes = 20_000_000

    def request_path(self, model: str) -> str:
        """generateContent under the model's resource name."""
        return f"/v1beta/models/{model_id(model)}:generateContent"

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        """The key in `x-goog-api-key` (never in the URL, where proxies log it)."""
        return {"x-goog-api-key": api_key} if api_key else {}

    def check_settings(self, settings: RequestSettings) -> None:
        """--schema in json_schema mode is OpenAI's response_format: use --schema-mode prompt."""
        if settings.response_format is not None:
            raise ConfigError("--provider gemini has no response_format: use --schema-mode "
                              "prompt with --schema")

    def build_request(self, settings: RequestSettings, jpeg: bytes,
                      prompt: str | None = None) -> dict[str, Any]:
        """A generateContent body: the prompt, then the image, in one user turn."""
        parts: list[dict[str, Any]] = [{"text": prompt or settings.prompt}]
        parts += [{"inline_data": {"mime_type": "image/jpeg", "data": b64(image)}}
                  for image in as_images(jpeg)]  # a video's frames: several, in order
        config: dict[str, Any] = {"maxOutputTokens": settings.max_output_tokens}
        if settings.temperature is not None:
            config["temperature"] = settings.temperature
        body: dict[str, Any] = {"contents": [{"role": "user", "parts": parts}],
                                "generationConfig": config}
        if settings.system_prompt:
            body["systemInstruction"] = {"parts": [{"text": settings.system_prompt}]}
        body.update(settings.extra_body)
        return body

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes, *,
                       now: float | None = None) -> ChatResult:
        """A ChatResult, or the typed ApiError of this answer."""
        h = lower_headers(headers)
        reply = Reply(status, h, request_id_of(h), RateLimitInfo(), now)
        if not 200 <= status < 300:
            raise error_from_body(reply, status, body)
        data = decode_body(reply, body)
        reply = Reply(status, h, reply.request_id or _text(data.get("responseId")),
                      reply.rate_limits, now)
        if isinstance(data.get("error"), Mapping):
            err = data["error"]
            inside = err.get("code") if isinstance(err.get("code"), int) else 500
            raise _classified(reply, inside, err, body_error(
                body, h), label=f"HTTP {status} with error {inside} inside")
        usage = parse_gemini_usage(data.get("usageMetadata"))
        candidates = data.get("candidates")
        candidate = candidates[0] if isinstance(candidates, list) and candidates else None
        if not isinstance(candidate, Mapping):
            feedback = data.get("promptFeedback")
            block = feedback.get("blockReason") if isinstance(feedback, Mapping) else None
            if block:
                raise ContentFiltered(safe_message(f"the prompt was blocked ({block})"),
                                      status=status, code="content_filter",
                                      request_id=reply.request_id, usage=usage)
            raise reply.bad("the response has no candidates")
        return answer_result(reply, read_candidate(candidate), usage,
                             _text(data.get("modelVersion")))


def model_id(model: str) -> str:
    """The model's id in a resource path: `models/` dropped, the rest URL-quoted."""
    name = model.removeprefix("models/")
    return quote(name, safe="-._~")


def read_candidate(candidate: Mapping[str, Any]) -> Answer:
    """The caption of one candidate: its non-thought text parts joined, finishReason mapped."""
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, Mapping) else None
    text = "".join(p["text"] for p in parts or ()
                   if isinstance(p, Mapping) and isinstance(p.get("text"), str)
                   and not p.get("thought"))
    caption, set_aside = strip_reasoning(text)
    raw = candidate.get("finishReason")
    reason = _FINISH.get(raw, raw.lower()) if isinstance(raw, str) and raw else None
    return Answer(caption, None, reason, set_aside)


def retry_delay(details: Any) -> float | None:
    """Seconds in a google.rpc.RetryInfo detail ("12s", "0.5s"), or None."""
    for detail in details if isinstance(details, list) else ():
        if isinstance(detail, Mapping) and detail.get("@type") == _RETRY_INFO:
            delay = detail.get("retryDelay")
            return parse_duration(delay) if isinstance(delay, str) else None
    return None


def _daily_quota(details: Any) -> bool:
    """True when a QuotaFailure names a per-day quota: waiting seconds will not help."""
    for detail in details if isinstance(details, list) else ():
        if isinstance(detail, Mapping) and detail.get("@type") == _QUOTA_FAILURE:
            for violation in detail.get("violations") or ():
                if isinstance(violation, Mapping) and "PerDay" in str(violation.get("quotaId")):
                    return True
    return False


def _reasons(details: Any) -> set[str]:
    return {str(d.get("reason")) for d in details if isinstance(d, Mapping)
            and d.get("@type") == _ERROR_INFO} if isinstance(details, list) else set()


def error_from_body(reply: Reply, status: int, body: bytes) -> ApiError:
    """The ApiError of a non-2xx Gemini answer (any body, JSON or not)."""
    info = body_error(body, reply.headers)
    try:
        err = json.loads(body).get("error")
    except (ValueError, AttributeError, UnicodeDecodeError, RecursionError):
        err = None
    return _classified(reply, status, err if isinstance(err, Mapping) else {}, info)


def _classified(reply: Reply, status: int, err: Mapping[str, Any], info: ErrorInfo,
                label: str | None = None) -> ApiError:
    """Gemini's error, typed: the `status` string as the code, RetryInfo as the wait."""
    details = err.get("details")
    code = _text(err.get("status")) or info.code
    info = ErrorInfo(message=info.message, code=code, etype=info.etype, number=info.number,
                     html=info.html)
    cls: type[ApiError] | None = None
    if status == 429 and _daily_quota(details) and retry_delay(details) is None:
        cls = QuotaExceeded
    elif _reasons(details) & _BAD_KEY:
        cls = AuthError
    wait = retry_delay(details)
    if wait is None:
        wait = retry_after_seconds(reply.headers, None, reply.now)
    return api_error(reply, status, info, label=label, retry_after=wait, cls=cls)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


PROVIDER = GeminiProvider()
