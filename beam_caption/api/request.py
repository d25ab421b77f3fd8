"""Building a chat-completions request, with no I/O: settings in, a JSON-able body out.

`request_key` gives an answer its identity (the image's sha256 plus every setting that shapes the
answer); CaptionConfig.request_key is the one place it is derived from a run's settings.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from beam_caption.errors import ConfigError

DETAILS = ("auto", "low", "high")
TOKEN_PARAMS = ("max_completion_tokens", "max_tokens")


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


def as_images(jpeg: bytes | Sequence[bytes]) -> list[bytes]:
    """One image's JPEG, or a video's keyframes (several JPEGs in one request), as a list."""
    return [jpeg] if isinstance(jpeg, bytes | bytearray) else list(jpeg)


def build_request(settings: RequestSettings, jpeg: bytes | Sequence[bytes],
                  prompt: str | None = None) -> dict:
    """The chat.completions body for one image (or a video's frames, in order): an optional
    system message, then the text and the image(s).

    The text comes before the image so that requests share a prefix the provider can cache.
    """
    messages: list[dict[str, Any]] = []
    if settings.system_prompt:
        messages.append({"role": "system", "content": settings.system_prompt})
    content: list[dict[str, Any]] = [{"type": "text", "text": prompt or settings.prompt}]
    for image in as_images(jpeg):
        data_url = "data:image/jpeg;base64," + base64.b64encode(image).decode("ascii")
        content.append({"type": "image_url",
                        "image_url": {"url": data_url, "detail": settings.detail}})
    messages.append({"role": "user", "content": content})
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
