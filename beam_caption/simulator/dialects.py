"""The three wire dialects the simulator speaks, told apart by path: OpenAI (/v1/...), Anthropic
(/v1/messages...) and Gemini (/v1beta/...). Each has its own key header, error body and
rate-limit headers; handlers raise one SimError and the app's middleware renders it here.

Error shapes, as the providers' API references give them:
- Anthropic: {"type": "error", "error": {"type", "message"}, "request_id"}; 529
  overloaded_error for an overloaded server, 402 billing_error for no credit, `retry-after`
  and `anthropic-ratelimit-*` headers (resets as RFC 3339 times);
- Gemini: {"error": {"code", "message", "status", "details"}}; a 429 RESOURCE_EXHAUSTED with a
  google.rpc.RetryInfo detail ("retryDelay": "1.5s"), or a QuotaFailure for a per-day quota.
"""

from __future__ import annotations

import datetime
import hmac
import math
import uuid
from typing import Any

from aiohttp import web

from beam_caption.simulator.apierror import SimError
from beam_caption.simulator.ratelimit import RateLimiter

OPENAI, ANTHROPIC, GEMINI = "openai", "anthropic", "gemini"
CHAT_PATH = "/v1/chat/completions"
MESSAGES_PATH = "/v1/messages"
ANTHROPIC_VERSION = "2023-06-01"

_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                    402: "billing_error", 403: "permission_error", 404: "not_found_error",
                    413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
                    503: "overloaded_error", 529: "overloaded_error"}
_GOOGLE_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                  404: "NOT_FOUND", 409: "ABORTED", 413: "INVALID_ARGUMENT",
                  429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE",
                  504: "DEADLINE_EXCEEDED"}
RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
QUOTA_FAILURE = "type.googleapis.com/google.rpc.QuotaFailure"


def dialect(path: str) -> str:
    """Which API a request path belongs to."""
    if path == MESSAGES_PATH or path.startswith(MESSAGES_PATH + "/"):
        return ANTHROPIC
    if path.startswith("/v1beta/"):
        return GEMINI
    return OPENAI


def is_api(path: str) -> bool:
    """True for the paths that need a key (and are logged)."""
    return path.startswith(("/v1/", "/v1beta/"))


def is_realtime(path: str) -> bool:
    """True for the three realtime endpoints (counted in the ledger's outcomes)."""
    return path in (CHAT_PATH, MESSAGES_PATH) or (
        path.startswith("/v1beta/models/") and path.endswith(":generateContent"))


def _same(sent: str, key: str) -> bool:
    return hmac.compare_digest(sent.strip().encode(), key.encode())


def check_key(request: web.Request, key: str | None) -> None:
    """The dialect's own key header (and Anthropic's version header); 401 as each answers."""
    kind = dialect(request.path)
    if kind == ANTHROPIC:
        if not request.headers.get("anthropic-version"):
            raise SimError(400, "anthropic-version: header is required", outcome="bad_request")
        if key is not None and not _same(request.headers.get("x-api-key", ""), key):
            raise SimError(401, "invalid x-api-key", outcome="unauthorized")
    elif kind == GEMINI:
        if key is None:
            return
        sent = request.headers.get("x-goog-api-key") or request.query.get("key") or ""
        if not _same(sent, key):
            raise SimError(400, "API key not valid. Please pass a valid API key.",
                           code="API_KEY_INVALID", outcome="unauthorized")


def render_error(path: str, error: SimError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, body, headers) of `error` in the dialect of `path`."""
    kind = dialect(path)
    if kind == ANTHROPIC:
        return _anthropic_error(error)
    if kind == GEMINI:
        return _gemini_error(error)
    return error.status, error.body(), error.headers


def _anthropic_error(error: SimError) -> tuple[int, dict[str, Any], dict[str, str]]:
    status, message = error.status, error.message
    if error.code == "insufficient_quota":
        status, message = 402, ("Your credit balance is too low to access the Anthropic API. "
                                "Please go to Plans & Billing to upgrade or purchase credits.")
    elif status == 503:
        status, message = 529, "Overloaded"
    headers = {k: v for k, v in error.headers.items() if k == "retry-after"}
    body = {"type": "error", "error": {"type": _ANTHROPIC_TYPES.get(status, "api_error"),
                                       "message": message},
            "request_id": f"req_{uuid.uuid4().hex[:24]}"}
    return status, body, headers


def _gemini_error(error: SimError) -> tuple[int, dict[str, Any], dict[str, str]]:
    status = error.status
    details: list[dict[str, Any]] = []
    if error.code == "API_KEY_INVALID":
        details.append({"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID", "domain": "googleapis.com"})
    elif error.code == "insufficient_quota":
        details.append({"@type": QUOTA_FAILURE, "violations": [{
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_requests",
            "quotaId": "GenerateRequestsPerDayPerProjectPerModel"}]})
    elif status == 429 and "retry-after-ms" in error.headers:
        wait = int(error.headers["retry-after-ms"]) / 1000
        details.append({"@type": RETRY_INFO, "retryDelay": f"{math.ceil(wait * 1000) / 1000}s"})
    body = {"error": {"code": status, "message": error.message,
                      "status": _GOOGLE_STATUS.get(status, "UNKNOWN")}}
    if details:
        body["error"]["details"] = details
    return status, body, {}


def limit_headers(path: str, limiter: RateLimiter, now: float, wall: float) -> dict[str, str]:
    """The rate-limit headers of the dialect (`now` monotonic, `wall` epoch seconds): OpenAI's
    six x-ratelimit-*, Anthropic's anthropic-ratelimit-*, none for Gemini (it sends none)."""
    kind = dialect(path)
    if kind == OPENAI:
        return limiter.headers(now)
    if kind == GEMINI:
        return {}
    out: dict[str, str] = {}
    for win, name in ((limiter.requests, "requests"), (limiter.tokens, "tokens")):
        reset = datetime.datetime.fromtimestamp(wall + win.reset_after(now), datetime.UTC)
        out[f"anthropic-ratelimit-{name}-limit"] = str(win.limit or 1_000_000_000)
        out[f"anthropic-ratelimit-{name}-remaining"] = str(win.remaining(now))
        out[f"anthropic-ratelimit-{name}-reset"] = reset.strftime("%Y-%m-%dT%H:%M:%SZ")
    return out


def request_id_header(path: str) -> dict[str, str]:
    """The request-id header of the dialect (Anthropic: request-id; Gemini: none)."""
    kind = dialect(path)
    if kind == ANTHROPIC:
        return {"request-id": f"req_{uuid.uuid4().hex[:24]}"}
    if kind == GEMINI:
        return {}
    return {"x-request-id": f"req_{uuid.uuid4().hex}"}
