"""SimError: an HTTP error in the OpenAI shape {"error": {"message", "type", "param", "code"}}.

Raised anywhere inside request handling; the app turns it into the response. The outcome names
the ledger bucket the request is counted in (see ledger.OUTCOMES). The simulator's own class, on
the server side: beam_caption.api.errors.ApiError is what the client raises for such an answer.
"""

from __future__ import annotations

from typing import Any


class SimError(Exception):
    """An error answer: HTTP status, OpenAI error fields, extra headers and the ledger outcome."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None,
                 outcome: str = "bad_request", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.outcome = outcome
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The JSON body OpenAI returns for this error."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> SimError:
    """400 invalid_request_error (the validation failures)."""
    return SimError(400, message, param=param, code=code)


def invalid_value(param: str, value: Any, supported: tuple[str, ...]) -> SimError:
    """400 for an enum-like parameter with an unsupported value, worded as the API words it."""
    names = ", ".join(f"'{s}'" for s in supported)
    return bad_request(f"Invalid value: {value!r}. Supported values are: {names}.", param,
                       "invalid_value")


def missing(param: str) -> SimError:
    """400 for a required parameter that is absent."""
    return bad_request(f"Missing required parameter: '{param}'.", param,
                       "missing_required_parameter")


def invalid_type(param: str, expected: str, value: Any) -> SimError:
    """400 for a parameter of the wrong JSON type."""
    return bad_request(f"Invalid type for '{param}': expected {expected}, but got "
                       f"{_json_type(value)} instead.", param, "invalid_type")


def unauthorized(message: str) -> SimError:
    """401 invalid_api_key; the message never repeats the key that was sent."""
    return SimError(401, message, code="invalid_api_key", outcome="unauthorized")


def not_found(message: str, code: str | None = None, param: str | None = None) -> SimError:
    """404 (unknown model, file, batch or route)."""
    return SimError(404, message, code=code, param=param, outcome="not_found")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
