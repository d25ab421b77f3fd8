"""OpenAI chat completions, and every server that speaks them (gateways such as LiteLLM and
OpenRouter, vLLM, llama.cpp, Ollama): api/request.py builds the body, api/response.py reads
the answer; this adapter only names the path and the bearer header."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from beam_caption.api import request as chat_request
from beam_caption.api import response as chat_response
from beam_caption.api.request import RequestSettings
from beam_caption.api.response import ChatResult
from beam_caption.options import DEFAULT_MODEL


class OpenAIProvider:
    """The default provider: `POST {base}/chat/completions` with `Authorization: Bearer`."""

    name = "openai"
    default_base_url = "https://api.openai.com/v1"
    default_model = DEFAULT_MODEL
    key_env = "OPENAI_API_KEY"
    base_url_env = "OPENAI_BASE_URL"
    batch_max_lines = 50_000
    batch_max_bytes = 200_000_000

    def request_path(self, model: str) -> str:
        """Chat completions, whatever the model."""
        return "/chat/completions"

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        """Bearer auth."""
        return {"Authorization": f"Bearer {api_key}"} if api_key else {}

    def check_settings(self, settings: RequestSettings) -> None:
        """Everything RequestSettings holds is OpenAI's own."""

    def build_request(self, settings: RequestSettings, jpeg: bytes,
                      prompt: str | None = None) -> dict[str, Any]:
        """api/request.py's chat.completions body."""
        return chat_request.build_request(settings, jpeg, prompt)

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes, *,
                       now: float | None = None) -> ChatResult:
        """api/response.py's parser."""
        return chat_response.parse_response(status, headers, body, now=now)


PROVIDER = OpenAIProvider()
