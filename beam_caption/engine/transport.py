"""The engine's I/O: one aiohttp session per engine, a POST that reads the whole answer under a
timeout, and the one place aiohttp's exceptions become ApiErrors (api/ never imports aiohttp).

The session is created and closed on the engine's loop; whoever creates it closes it (STYLE 7).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import aiohttp

from beam_caption.api.errors import ApiError, Timeout, TransportError
from beam_caption.engine.settings import EndpointConfig


class Transport:
    """POSTs JSON bodies to one endpoint over one connection pool sized to `pool` connections."""

    def __init__(self, endpoint: EndpointConfig, pool: int, api_key: str | None) -> None:
        self.endpoint = endpoint
        self._pool = pool
        self._api_key = api_key
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        """Create the session (on the engine's loop)."""
        connector = aiohttp.TCPConnector(limit=self._pool, limit_per_host=0, ttl_dns_cache=300)
        headers = {"Content-Type": "application/json",
                   **self.endpoint.adapter.auth_headers(self._api_key)}
        self._session = aiohttp.ClientSession(connector=connector, headers=headers)

    async def close(self) -> None:
        """Close the session; requests still on the wire are cancelled."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def post(self, body: bytes, url: str | None = None
                   ) -> tuple[int, Mapping[str, str], bytes, float]:
        """POST `body` to `url` (default: the chat-completions URL); (status, headers, body,
        latency in ms).

        The whole response is read inside `async with`, under a total and a connect timeout.
        Raises aiohttp's and asyncio's exceptions (see as_api_error).
        """
        if self._session is None:
            raise RuntimeError("the transport is not open")
        timeout = aiohttp.ClientTimeout(total=self.endpoint.request_timeout_s,
                                        sock_connect=self.endpoint.connect_timeout_s)
        started = time.monotonic()
        async with self._session.post(url or self.endpoint.chat_completions_url, data=body,
                                      timeout=timeout) as response:
            payload = await response.read()
            status, headers = response.status, response.headers
        return status, headers, payload, (time.monotonic() - started) * 1000


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
