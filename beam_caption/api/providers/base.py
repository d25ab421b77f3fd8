"""The `Provider` protocol every adapter module fills in, and the helpers they share.

Everything here is pure: bytes and dicts in, dicts, a ChatResult or an ApiError out. The engine
(engine/) sends what an adapter builds and hands back what came; batch/ does the same with the
batch shapes.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from beam_caption.api.request import RequestSettings
from beam_caption.api.response import ChatResult


@dataclass(frozen=True)
class BatchStatus:
    """A provider's batch, in the terms batch/ acts on (OpenAI's: validating, in_progress,
    completed, failed, expired, cancelling, cancelled), with its request counts."""

    id: str
    status: str
    total: int = 0
    completed: int = 0
    failed: int = 0
    errors: tuple[str, ...] = ()
    created_at: int = 0


@dataclass(frozen=True)
class BatchResult:
    """One request's outcome in a batch's results, as collect reads it: an HTTP-like answer
    (`status`, `body` bytes the provider's parse_response reads) or, with no answer, `code`
    (batch_expired, batch_cancelled, batch_failed) and a message."""

    custom_id: str
    status: int | None = None
    body: bytes = b""
    headers: Mapping[str, str] | None = None
    code: str | None = None
    message: str = ""


class Provider(Protocol):
    """What one API needs to be spoken (see the package docstring)."""

    name: str
    default_base_url: str  # the provider's own API root, as its official SDK spells it
    default_model: str  # what --model is without one: the provider's cheapest vision model
    key_env: str  # where its key is looked for by default
    base_url_env: str  # the variable its official SDK reads a base URL from
    batch_max_lines: int  # the Batch API's own limits per batch
    batch_max_bytes: int

    def request_path(self, model: str) -> str:
        """The realtime endpoint's path under the base URL."""
        ...

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        """The headers every request carries (the key, API version); none without a key."""
        ...

    def check_settings(self, settings: RequestSettings) -> None:
        """ConfigError for settings this API cannot honour."""
        ...

    def build_request(self, settings: RequestSettings, jpeg: bytes,
                      prompt: str | None = None) -> dict[str, Any]:
        """The JSON body asking for one image's caption."""
        ...

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes, *,
                       now: float | None = None) -> ChatResult:
        """A ChatResult for a usable answer; otherwise raises the matching ApiError."""
        ...


def b64(data: bytes) -> str:
    """Standard base64 text of `data` (every provider's inline-image encoding)."""
    return base64.b64encode(data).decode("ascii")


def lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Headers keyed by lower-case name (aiohttp's CIMultiDict and plain dicts alike)."""
    return {str(k).lower(): str(v) for k, v in headers.items()}


def count(value: Any) -> int:
    """A non-negative int count, else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
