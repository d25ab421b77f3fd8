"""Anthropic's native Messages API (`--provider anthropic`), with no I/O.

Request: POST {base}/v1/messages, `x-api-key` and `anthropic-version: 2023-06-01`, the image as a
base64 block before the prompt (Anthropic's vision guide: images first work best). Answer:
`content[]` text blocks (thinking blocks never read), `stop_reason` (end_turn, stop_sequence,
max_tokens, refusal, ...), `usage` with the cache fields (api/usage.py). Errors: the body
{"type": "error", "error": {"type", "message"}}; 529 overloaded_error is retried like any 5xx,
402 billing_error is terminal; `retry-after` and the `anthropic-ratelimit-*` headers feed the
pacing. tests/samples/anthropic/ holds one recorded body per case.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from beam_caption.api.answer import Answer, finish_reason, strip_reasoning
from beam_caption.api.error_body import ErrorInfo, body_error, error_info
from beam_caption.api.errors import ApiError
from beam_caption.api.providers.base import b64, lower_headers
from beam_caption.api.ratelimits import parse_anthropic_rate_limits, retry_after_seconds
from beam_caption.api.request import RequestSettings, as_images
from beam_caption.api.response import (
    ChatResult,
    Reply,
    answer_result,
    api_error,
    decode_body,
    request_id_of,
)
from beam_caption.api.usage import parse_anthropic_usage
from beam_caption.errors import ConfigError

API_VERSION = "2023-06-01"
# An error body's type -> the HTTP status it stands for (an error inside a 200, a batch result).
_TYPE_STATUS = {"invalid_request_error": 400, "authentication_error": 401,
                "billing_error": 402, "permission_error": 403, "not_found_error": 404,
                "request_too_large": 413, "rate_limit_error": 429, "api_error": 500,
                "timeout_error": 504, "overloaded_error": 529}


class AnthropicProvider:
    """Claude through the Messages API."""

    name = "anthropic"
    default_base_url = "https://api.anthropic.com"
    default_model = "claude-haiku-4-5"
    key_env = "ANTHROPIC_API_KEY"
    base_url_env = "ANTHROPIC_BASE_URL"
    # Message Batches: at most 100,000 requests or 256 MB per batch.
    batch_max_lines = 100_000
    batch_max_bytes = 256_000_000

    def request_path(self, model: str) -> str:
        """The Messages endpoint."""
        return "/v1/messages"

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        """`anthropic-version` always; `x-api-key` with a key."""
        headers = {"anthropic-version": API_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    def check_settings(self, settings: RequestSettings) -> None:
        """--schema in json_schema mode is OpenAI's response_format: use --schema-mode prompt."""
        if settings.response_format is not None:
            raise ConfigError("--provider anthropic has no response_format: use --schema-mode "
                              "prompt with --schema")
        if settings.temperature is not None and settings.temperature > 1:
            raise ConfigError("--provider anthropic takes --temperature between 0 and 1")

    def build_request(self, settings: RequestSettings, jpeg: bytes,
                      prompt: str | None = None) -> dict[str, Any]:
        """A Messages body: one user turn, the image block, then the prompt."""
        content: list[dict[str, Any]] = [
            {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg",
                                         "data": b64(image)}}
            for image in as_images(jpeg)]  # a video's frames: several, in order
        content.append({"type": "text", "text": prompt or settings.prompt})
        body: dict[str, Any] = {"model": settings.model,
                                "max_tokens": settings.max_output_tokens,
                                "messages": [{"role": "user", "content": content}]}
        if settings.system_prompt:
            body["system"] = settings.system_prompt
        if settings.temperature is not None:
            body["temperature"] = settings.temperature
        body.update(settings.extra_body)
        return body

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes, *,
                       now: float | None = None) -> ChatResult:
        """A ChatResult, or the typed ApiError of this answer."""
        h = lower_headers(headers)
        reply = Reply(status, h, request_id_of(h), parse_anthropic_rate_limits(h, now), now)
        if not 200 <= status < 300:
            raise _error(reply, status, body_error(body, h))
        data = decode_body(reply, body)
        reply = Reply(status, h, reply.request_id or _text(data.get("id")), reply.rate_limits,
                      now)
        if data.get("type") == "error" or data.get("error"):
            info = error_info(data.get("error"))
            inside = _TYPE_STATUS.get(info.etype or "")
            if inside is None:
                raise reply.bad(f"an error in a successful response: {info.message}")
            raise _error(reply, inside, info, label=f"HTTP {status} with error {inside} inside")
        content = data.get("content")
        if not isinstance(content, list):
            raise reply.bad("the response has no content")
        return answer_result(reply, read_content(content, data.get("stop_reason")),
                             parse_anthropic_usage(data.get("usage")), _text(data.get("model")))


def read_content(content: list[Any], stop_reason: Any) -> Answer:
    """The caption of a Messages answer: its text blocks joined (thinking and other blocks
    left out, a leading <think> block set aside), and the stop reason in OpenAI's terms."""
    text = "".join(block.get("text") for block in content
                   if isinstance(block, Mapping) and block.get("type") == "text"
                   and isinstance(block.get("text"), str))
    caption, set_aside = strip_reasoning(text)
    reason = finish_reason(stop_reason)
    if reason == "model_context_window_exceeded":
        reason = "length"
    refusal = (caption or "the model refused (stop_reason refusal)") if reason == "refusal" \
        else None
    return Answer(caption, refusal, reason, set_aside)


def _error(reply: Reply, status: int, info: ErrorInfo, label: str | None = None) -> ApiError:
    """The ApiError of an error answer; the retry hint from `retry-after`."""
    return api_error(reply, status, info, label=label,
                     retry_after=retry_after_seconds(reply.headers, None, reply.now))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


PROVIDER = AnthropicProvider()
