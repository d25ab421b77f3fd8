"""Which batch wire each provider speaks: OpenAI's Files + Batch API (batch/wire.py, one JSONL
file uploaded per shard), or a provider whose batches are created with their requests inline
(batch/<provider>_wire.py: Anthropic's Message Batches, Gemini's Batch API), sent by
batch/inline.py. A provider without a `<name>_wire` module has no batch mode."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from beam_caption.batch.wire import ENDPOINT
from beam_caption.errors import ConfigError

OPENAI = "openai"


def inline_wire(provider: str) -> ModuleType:
    """The wire module of an inline-batch provider; ConfigError when it has no batch mode."""
    try:
        return importlib.import_module(f"beam_caption.batch.{provider}_wire")
    except ModuleNotFoundError:
        raise ConfigError(f"--mode batch is not available for --provider {provider}") from None


def request_line(provider: str, custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """A shard line holding one request, in the provider's batch format."""
    if provider == OPENAI:
        return {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}
    return inline_wire(provider).line(custom_id, body)
