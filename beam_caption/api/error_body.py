"""What an error body says, whichever server sent it, with no I/O: the JSON error objects of
OpenAI, llama.cpp, vLLM, LiteLLM, Ollama and FastAPI-style servers, and the HTML pages and
plain text of proxies and web servers. api/response.py turns it into a typed ApiError.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# An HTML document by its first bytes: a byte-order mark, blanks and comments may come first.
_HTML_START = re.compile(
    rb"\A(?:\xef\xbb\xbf)?\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body)\b",
    re.IGNORECASE | re.DOTALL)
# What json.loads raises on a body that is no JSON: junk, bad UTF-8, or nesting deep enough to
# exhaust the stack (which must not escape the parser as an internal error).
JSON_ERRORS = (ValueError, UnicodeDecodeError, RecursionError)
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class ErrorInfo:
    """What an error body says; `number` is a numeric code (OpenRouter's 429, LiteLLM's "429")
    and `html` marks a page from a proxy or web server."""

    message: str | None = None
    code: str | None = None
    etype: str | None = None
    number: int | None = None
    html: bool = False


def _text(value: Any) -> str | None:
    """A non-blank string as sent, else None."""
    return value if isinstance(value, str) and value.strip() else None


def is_html(headers: Mapping[str, str], body: bytes) -> bool:
    """An HTML page by its content type or its first bytes (proxies mislabel either);
    `headers` lower-cased."""
    return "text/html" in headers.get("content-type", "").lower() or bool(
        _HTML_START.match(body[:4096]))


def page_error(body: bytes, headers: Mapping[str, str]) -> ErrorInfo:
    """A body that is not JSON: an HTML page's title, or the text itself."""
    text = body.decode("utf-8", "replace")
    title = _TITLE.search(text)
    snippet = html.unescape(title.group(1)) if title else re.sub(r"<[^>]+>", " ", text)
    return ErrorInfo(message=snippet.strip() or None, html=is_html(headers, body))


def error_info(err: Any) -> ErrorInfo:
    """An error object of any common server's shape: {"message", "type", "code"} (the code a
    string, a number or a numeric string; OpenRouter adds metadata.raw), Ollama's plain string,
    FastAPI's {"detail": ...}."""
    if isinstance(err, str):
        return ErrorInfo(message=err)
    if not isinstance(err, Mapping):
        return ErrorInfo()
    raw = err.get("code")
    number = raw if isinstance(raw, int) and not isinstance(raw, bool) else None
    if isinstance(raw, str) and raw.strip().isdigit():
        number = int(raw)
    message = _text(err.get("message")) or _text(err.get("detail"))
    metadata = err.get("metadata")
    upstream = _text(metadata.get("raw")) if isinstance(metadata, Mapping) else None
    if upstream is not None and upstream != message:
        # OpenRouter's message is generic ("Provider returned error"); the upstream's own
        # words are in metadata.raw.
        message = f"{message}: {upstream}" if message else upstream
    return ErrorInfo(message=message, code=_text(raw), etype=_text(err.get("type")),
                     number=number)


def body_error(body: bytes, headers: Mapping[str, str]) -> ErrorInfo:
    """What a non-2xx body says; `headers` lower-cased."""
    try:
        data = json.loads(body)
    except JSON_ERRORS:
        return page_error(body, headers)
    if not isinstance(data, Mapping):
        return ErrorInfo()
    # OpenAI and llama.cpp: {"error": {...}}; Ollama: {"error": "..."}; old vLLM: flat.
    return error_info(data.get("error", data))


def display_code(info: ErrorInfo) -> str | None:
    """The code worth showing in a message: not a bare number, not LiteLLM's "None"."""
    for value in (info.code, info.etype):
        if value and not value.isdigit() and value not in ("None", "null"):
            return value
    return None
