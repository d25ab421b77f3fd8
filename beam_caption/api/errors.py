"""The typed errors of a chat-completions request, each with the stable code its error row gets.

ApiError(status, code, retry_after, ...) -> RateLimited (QuotaExceeded), ServerError, BadRequest
(HtmlResponse, UnusableAnswer: Refused, EmptyAnswer), AuthError, TransportError (Timeout),
ResponseError, ContentFiltered. api/response.py raises them; api/retry.py decides which are
retried. Messages are safe to show a user.
"""

from __future__ import annotations

from beam_caption.api.ratelimits import RateLimitInfo
from beam_caption.api.usage import Usage
from beam_caption.errors import BeamCaptionError


class ApiError(BeamCaptionError):
    """A failed request. The message is safe to show: it never holds request headers or a key."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 retry_after: float | None = None, request_id: str | None = None,
                 rate_limits: RateLimitInfo | None = None, usage: Usage | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.retry_after = retry_after
        self.request_id = request_id
        self.rate_limits = rate_limits
        # Set when the provider billed the failed answer (content filter, refusal, an answer
        # with no text), so its cost is counted and the answer is kept, never bought again.
        self.usage = usage

    @property
    def row_code(self) -> str:
        """The stable code written in error rows (http_<status> unless a better one is known)."""
        if self.code in _CODE_ROWS:
            return _CODE_ROWS[self.code]
        return f"http_{self.status}" if self.status is not None else "api_error"


# Provider codes worth their own row code; the rest stay http_<status> so the set remains small.
_CODE_ROWS = {"model_not_found": "model_not_found", "content_filter": "content_filter",
              "content_policy_violation": "content_filter"}


class RateLimited(ApiError):
    """429: too many requests or tokens for now; retried after a backoff."""

    @property
    def row_code(self) -> str:
        """Always `rate_limited`."""
        return "rate_limited"


class QuotaExceeded(RateLimited):
    """429 insufficient_quota: the account is out of credit; terminal, never retried."""

    @property
    def row_code(self) -> str:
        """Always `insufficient_quota`."""
        return "insufficient_quota"


class ServerError(ApiError):
    """5xx: the provider failed; retried."""


class BadRequest(ApiError):
    """400, 404, 422 and other 4xx without a class of their own: this request will never work."""


class HtmlResponse(BadRequest):
    """A 2xx whose body is an HTML page: a proxy's sign-in or portal page, or a --base-url that
    is a website rather than the API. Nothing was billed; the same request gets the same page,
    so it is terminal, and a streak of them before any success stops the run (engine/stop.py)."""

    @property
    def row_code(self) -> str:
        """Always `html_response`."""
        return "html_response"


class UnusableAnswer(BadRequest):
    """A 2xx answer that is no caption although the provider billed it (see `usage`).

    The same request would get the same answer, so it is terminal (a BadRequest: never retried,
    and a streak of them before any success stops the run, as a streak of 400s does); its cost
    is kept and its row journaled like a caption's, so it is never paid for twice.
    """


class Refused(UnusableAnswer):
    """The model declined (`message.refusal`): the message is the refusal's text."""

    @property
    def row_code(self) -> str:
        """Always `refusal`."""
        return "refusal"


class EmptyAnswer(UnusableAnswer):
    """An answer with no text once reasoning is set aside: the output cap spent on reasoning,
    or a model that said nothing."""

    @property
    def row_code(self) -> str:
        """Always `empty_answer`."""
        return "empty_answer"


class AuthError(ApiError):
    """401 or 403: the key is wrong, revoked or not allowed this model; terminal."""


class TransportError(ApiError):
    """No HTTP answer: connection refused or reset, server disconnected, DNS; retried."""

    @property
    def row_code(self) -> str:
        """Always `connection_error`."""
        return "connection_error"


class Timeout(TransportError):
    """The request exceeded its connect or total timeout; retried."""

    @property
    def row_code(self) -> str:
        """Always `timeout`."""
        return "timeout"


class ResponseError(ApiError):
    """A 2xx whose body is unparseable, truncated or has no choices; retried."""

    @property
    def row_code(self) -> str:
        """Always `bad_response`."""
        return "bad_response"


class ContentFiltered(ApiError):
    """200 with finish_reason content_filter: billed (see `usage`), and would repeat; terminal."""

    @property
    def row_code(self) -> str:
        """Always `content_filter`."""
        return "content_filter"
