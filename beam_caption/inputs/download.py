"""Downloading https:// images: guarded against server-side request forgery, several at once.

Fetching a URL is a request our workers make on the user's behalf, so it is guarded by the policy
in inputs/urlguard.py unless allow_private is set. The check sits inside the connector's resolver,
so the address that was checked is the address that is connected to (no DNS-rebinding window),
and every redirect hop passes through it again. IP literals skip aiohttp's resolver, so fetch_url
checks those itself before each hop.

Every failure is an ImageError(stage="read") with a stable code; messages are safe to show.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver
from yarl import URL

from beam_caption.engine.loop import get_loop_thread
from beam_caption.inputs.files import causes
from beam_caption.inputs.images import ImageError
from beam_caption.inputs.urlguard import (
    GuardedConnector,
    GuardedResolver,
    check_address,
    check_hostname,
)

_STREAM_CHUNK = 64 * 1024
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class FetchSettings:
    """Limits for reading one image: size cap, total time per URL, redirects, private targets."""

    max_bytes: int = 50 * 1024 * 1024
    timeout_s: float = 30.0
    max_redirects: int = 3
    allow_private: bool = False


def make_guarded_connector(
    settings: FetchSettings, resolver: AbstractResolver | None = None
) -> aiohttp.TCPConnector:
    """A TCPConnector whose DNS answers are checked (call inside the running event loop).

    `resolver` replaces the system resolver (tests map names to addresses with it); its answers
    are checked all the same.
    """
    inner = resolver if resolver is not None else aiohttp.resolver.DefaultResolver()
    return GuardedConnector(
        guards_addresses=not settings.allow_private,
        resolver=GuardedResolver(inner, allow_private=settings.allow_private),
    )




async def fetch_url(session: aiohttp.ClientSession, url: str, settings: FetchSettings) -> bytes:
    """GET `url` following at most settings.max_redirects redirects, each hop checked again.

    `session` must use make_guarded_connector() unless settings.allow_private. Raises
    ImageError(stage="read"): forbidden_address, not_found (404/410), download_failed (other
    statuses, connection errors, too many redirects), too_large, timeout, empty_file.
    """
    if not settings.allow_private and not getattr(session.connector, "guards_addresses", False):
        raise ValueError("fetch_url needs a session built on make_guarded_connector()")
    try:
        # One deadline for the whole fetch: redirects and a slow trickle of body bytes included.
        async with asyncio.timeout(settings.timeout_s):
            return await _follow_redirects(session, URL(url), settings)
    except TimeoutError as exc:
        raise ImageError(
            "timeout", f"download did not finish within {settings.timeout_s:g} s", stage="read"
        ) from exc


async def _follow_redirects(
    session: aiohttp.ClientSession, url: URL, settings: FetchSettings
) -> bytes:
    """The redirect loop: check the hop, request it without auto-redirects, read or move on."""
    for _hop in range(settings.max_redirects + 1):
        _check_target(url, settings)
        try:
            async with session.get(url, allow_redirects=False) as response:
                if response.status in _REDIRECT_STATUSES:
                    url = _redirect_target(url, response)
                    continue
                _check_status(response.status)
                return await _read_body(response, settings.max_bytes)
        except (ImageError, TimeoutError):
            raise
        except aiohttp.ClientError as exc:
            # The resolver's ImageError can arrive wrapped by aiohttp.
            inner = next((c for c in causes(exc) if isinstance(c, ImageError)), None)
            if inner is not None:
                raise inner from exc
            raise ImageError("download_failed", _transport_message(url, exc), stage="read") from exc
    raise ImageError(
        "download_failed", f"more than {settings.max_redirects} redirects", stage="read"
    )


def _transport_message(url: URL, exc: aiohttp.ClientError) -> str:
    """A safe one-line description (host only: a URL may carry signed tokens)."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"cannot resolve host {url.host!r}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to host {url.host!r}"
    return f"download from {url.host!r} failed ({type(exc).__name__})"


def _check_target(url: URL, settings: FetchSettings) -> None:
    """Scheme and host checks that do not need DNS; IP literals are checked here."""
    if url.scheme not in ("http", "https"):
        raise ImageError(
            "download_failed", f"unsupported URL scheme {url.scheme!r}", stage="read"
        )
    host = url.host
    if not host:
        raise ImageError("download_failed", "URL has no host", stage="read")
    if settings.allow_private:
        return
    check_hostname(host)
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return  # a name: GuardedResolver checks what it resolves to
    check_address(host, host)


def _redirect_target(url: URL, response: aiohttp.ClientResponse) -> URL:
    """The absolute URL a redirect response points to."""
    location = response.headers.get("Location")
    if not location:
        raise ImageError(
            "download_failed", f"HTTP {response.status} redirect without a Location", stage="read"
        )
    return url.join(URL(location))


def _check_status(status: int) -> None:
    """not_found for 404/410, download_failed for any other non-2xx status."""
    if 200 <= status < 300:
        return
    code = "not_found" if status in (404, 410) else "download_failed"
    raise ImageError(code, f"HTTP {status}", stage="read")


async def _read_body(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """The body, refusing more than max_bytes by Content-Length and while streaming."""
    too_large = ImageError("too_large", f"download is larger than {max_bytes} bytes", stage="read")
    if response.content_length is not None and response.content_length > max_bytes:
        raise too_large
    body = bytearray()
    async for chunk in response.content.iter_chunked(_STREAM_CHUNK):
        body += chunk
        if len(body) > max_bytes:
            raise too_large
    if not body:
        raise ImageError("empty_file", "the download is empty", stage="read")
    return bytes(body)


class UrlFetcher:
    """Downloads for DoFn threads over one ClientSession, on the process's "fetch" loop thread.

    `submit` returns at once, so a thread can keep several downloads in flight; `fetch` waits for
    one. The session is created lazily on the loop, so every thread shares one connection pool.
    Shared per process and settings, with reference counts (inputs/fetch.py).
    """

    def __init__(self, settings: FetchSettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None

    def submit(self, url: str) -> concurrent.futures.Future[bytes]:
        """Start downloading `url`; the future holds its bytes or an ImageError (stage read)."""
        return get_loop_thread("fetch").submit(self._fetch(url))

    def fetch(self, url: str) -> bytes:
        """The bytes at `url`; raises ImageError (stage read) like fetch_url."""
        future = self.submit(url)
        try:
            # fetch_url enforces timeout_s itself; the margin covers scheduling only.
            return future.result(self.settings.timeout_s + 10)
        except TimeoutError as exc:
            future.cancel()
            raise ImageError(
                "timeout", f"download did not finish within {self.settings.timeout_s:g} s",
                stage="read",
            ) from exc

    async def _fetch(self, url: str) -> bytes:
        return await fetch_url(self._get_session(), url, self.settings)

    def _get_session(self) -> aiohttp.ClientSession:
        """The shared session; runs on the loop thread, so check-then-create cannot race."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            self._session = aiohttp.ClientSession(connector=make_guarded_connector(self.settings))
            self._session_loop = loop
        return self._session

    def close(self) -> None:
        """Close the session (idempotent)."""
        session, self._session = self._session, None
        if session is None or session.closed:
            return
        loop = self._session_loop
        if loop is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(session.close(), loop).result(10)
