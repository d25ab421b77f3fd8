"""The one place aiohttp's exceptions become ApiErrors (the api/ package never imports aiohttp)."""

from __future__ import annotations

import aiohttp

from beam_caption.api.errors import ApiError, Timeout, TransportError


def as_api_error(error: BaseException) -> ApiError | None:
    """The ApiError for a transport exception (timeouts, aiohttp connection errors), else None.

    The message names only the exception type, never the request.
    """
    if isinstance(error, ApiError):
        return error
    if isinstance(error, TimeoutError):
        return Timeout("the request timed out")
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        return None  # a certificate problem does not fix itself on retry
    if isinstance(error, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError
                  | ConnectionError):
        return TransportError(f"connection error ({type(error).__name__})")
    return None
