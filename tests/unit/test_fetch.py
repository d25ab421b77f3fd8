"""read_uri_bytes, the address guard and fetch_url against a real local aiohttp server.

No test here can send traffic off the machine: an autouse fixture wraps socket.connect so that
any attempt to connect to a non-loopback address is refused *and fails the test*. The one
exception is FAKE_PUBLIC_IP, an address the test resolver hands out for "public.test" so that the
guard (with allow_private=False) sees a public address; the wrapper rewrites connections to it
to 127.0.0.1 before any packet is sent. A broken guard therefore shows up as a failed test,
never as a request to a real host.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from apache_beam.io.filesystem import BeamIOError

from beam_caption import resources
from beam_caption.engine.loop import LoopThread
from beam_caption.inputs.download import (
    FetchSettings,
    UrlFetcher,
    fetch_url,
    make_guarded_connector,
)
from beam_caption.inputs.fetch import ImageReader, read_image_bytes
from beam_caption.inputs.files import _read_error, read_uri_bytes  # the error mapping, on shapes
from beam_caption.inputs.images import ImageError
from beam_caption.inputs.urlguard import forbidden_reason

# Classified global by Python's ipaddress (so the guard admits it) yet not a real web host; the
# socket wrapper below redirects it to loopback, so nothing is ever sent to it.
FAKE_PUBLIC_IP = "192.0.0.9"
BODY = b"\xff\xd8\xff" + bytes(range(256)) * 40  # 10 KB; content is irrelevant to fetching
PRIVATE = FetchSettings(allow_private=True, timeout_s=5)
GUARDED = FetchSettings(allow_private=False, timeout_s=5)


# --- the server -------------------------------------------------------------------------------


@dataclass
class Server:
    """The local test server: its port and per-path hit counts."""

    port: int
    hits: Counter[str] = field(default_factory=Counter)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


def _app(server: Server) -> web.Application:
    async def count(request: web.Request, handler):
        server.hits[request.path] += 1
        return await handler(request)

    async def ok(_: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="image/jpeg")

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]))

    async def big(_: web.Request) -> web.Response:
        return web.Response(body=b"x" * 5000)  # sends Content-Length: 5000

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()  # no Content-Length: the cap must count bytes
        await response.prepare(request)
        for _ in range(10):
            await response.write(b"y" * 1000)
        await response.write_eof()
        return response

    async def redirect(request: web.Request) -> web.Response:
        left = int(request.match_info["n"])
        target = "/ok.jpg" if left == 0 else f"/redirect/{left - 1}"
        raise web.HTTPFound(target)

    async def to(request: web.Request) -> web.Response:
        targets = {
            "loopback": f"http://127.0.0.1:{server.port}/ok.jpg",
            "localhost": f"http://localhost:{server.port}/ok.jpg",
            "metadata": "http://169.254.169.254/latest/meta-data/",
            "metadata-name": f"http://metadata.test:{server.port}/ok.jpg",
            "ftp": "ftp://example.org/x.jpg",
        }
        raise web.HTTPFound(targets[request.match_info["where"]])

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(1)
        return web.Response(body=BODY)

    async def empty(_: web.Request) -> web.Response:
        return web.Response(body=b"")

    app = web.Application(middlewares=[web.middleware(count)])
    app.router.add_get("/ok.jpg", ok)
    app.router.add_get("/status/{code}", status)
    app.router.add_get("/big", big)
    app.router.add_get("/stream", stream)
    app.router.add_get("/redirect/{n}", redirect)
    app.router.add_get("/to/{where}", to)
    app.router.add_get("/slow", slow)
    app.router.add_get("/empty", empty)
    return app


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """The app on 127.0.0.1, a free port, in its own loop thread."""
    loop_thread = LoopThread("test-fetch-server")
    state = Server(port=0)

    async def start() -> web.AppRunner:
        runner = web.AppRunner(_app(state))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        state.port = runner.addresses[0][1]
        return runner

    runner = loop_thread.run(start(), timeout=10)
    yield state
    loop_thread.run(runner.cleanup(), timeout=10)
    loop_thread.stop()


# --- the network fence ------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Refuse, record and fail on any connect to a non-loopback address."""
    violations: list[object] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def checked(sock: socket.socket, address: object) -> object:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
            host = str(address[0]).split("%", 1)[0]
            if host == FAKE_PUBLIC_IP:
                return ("127.0.0.1", *address[1:])
            if not ipaddress.ip_address(host).is_loopback:
                violations.append(address)
                raise OSError(errno.ENETUNREACH, "test fence: non-loopback connect refused")
        return address

    monkeypatch.setattr(socket.socket, "connect", lambda s, a: real_connect(s, checked(s, a)))
    monkeypatch.setattr(
        socket.socket, "connect_ex", lambda s, a: real_connect_ex(s, checked(s, a))
    )
    yield violations
    assert violations == [], f"something tried to leave the machine: {violations}"


class MapResolver(AbstractResolver):
    """Resolves only the names it is given; never asks the system resolver."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        if host not in self.names:
            raise OSError(errno.ENOENT, f"test resolver: unknown host {host}")
        return [ResolveResult(hostname=host, host=self.names[host], port=port,
                              family=socket.AF_INET, proto=0, flags=socket.AI_NUMERICHOST)]

    async def close(self) -> None:
        return None


def names() -> MapResolver:
    return MapResolver({"public.test": FAKE_PUBLIC_IP, "metadata.test": "169.254.169.254",
                        "loopback.test": "127.0.0.1", "localhost": "127.0.0.1"})


def fetch(url: str, settings: FetchSettings, resolver: MapResolver | None = None) -> bytes:
    """fetch_url on a fresh session built the way UrlFetcher builds it."""
    async def go() -> bytes:
        connector = make_guarded_connector(settings, resolver=resolver or names())
        async with aiohttp.ClientSession(connector=connector) as session:
            return await fetch_url(session, url, settings)

    return asyncio.run(go())


def fetch_error(url: str, settings: FetchSettings, resolver: MapResolver | None = None
                ) -> ImageError:
    with pytest.raises(ImageError) as caught:
        fetch(url, settings, resolver)
    assert caught.value.stage == "read"
    return caught.value


# --- fetch_url --------------------------------------------------------------------------------


def test_fetches_from_loopback_when_private_targets_are_allowed(server: Server) -> None:
    assert fetch(server.url("/ok.jpg"), PRIVATE) == BODY
    assert fetch(server.url("/ok.jpg", host="loopback.test"), PRIVATE) == BODY


def test_guard_admits_a_public_address(server: Server) -> None:
    resolver = names()
    assert fetch(server.url("/ok.jpg", host="public.test"), GUARDED, resolver) == BODY
    assert resolver.asked == ["public.test"]


@pytest.mark.parametrize(("status", "code"), [(404, "not_found"), (410, "not_found"),
                                              (500, "download_failed"), (403, "download_failed")])
def test_http_errors(server: Server, status: int, code: str) -> None:
    error = fetch_error(server.url(f"/status/{status}"), PRIVATE)
    assert error.code == code
    assert str(status) in error.message


def test_oversize_by_content_length(server: Server) -> None:
    error = fetch_error(server.url("/big"), FetchSettings(allow_private=True, max_bytes=1000))
    assert error.code == "too_large"


def test_oversize_while_streaming_without_content_length(server: Server) -> None:
    small = FetchSettings(allow_private=True, max_bytes=2500)
    assert fetch_error(server.url("/stream"), small).code == "too_large"
    # The same stream under a larger cap arrives whole: it was the byte count that tripped.
    assert fetch(server.url("/stream"), FetchSettings(allow_private=True)) == b"y" * 10_000


def test_redirects_up_to_the_limit_are_followed(server: Server) -> None:
    assert fetch(server.url("/redirect/2"), PRIVATE) == BODY  # 3 redirects


def test_a_fourth_redirect_is_refused(server: Server) -> None:
    before = server.hits["/ok.jpg"]
    error = fetch_error(server.url("/redirect/3"), PRIVATE)
    assert error.code == "download_failed"
    assert "redirects" in error.message
    assert server.hits["/ok.jpg"] == before


@pytest.mark.parametrize("where", ["loopback", "localhost", "metadata", "metadata-name"])
def test_redirect_to_a_private_target_is_refused(server: Server, where: str) -> None:
    before = server.hits["/ok.jpg"]
    error = fetch_error(server.url(f"/to/{where}", host="public.test"), GUARDED)
    assert error.code == "forbidden_address"
    assert server.hits[f"/to/{where}"] >= 1  # the first, public hop was made
    assert server.hits["/ok.jpg"] == before  # the private one was not


def test_name_resolving_to_metadata_is_refused_before_connecting(server: Server) -> None:
    resolver = names()
    hits_before = sum(server.hits.values())
    error = fetch_error(server.url("/ok.jpg", host="metadata.test"), GUARDED, resolver)
    assert error.code == "forbidden_address"
    assert "169.254.169.254" in error.message
    assert resolver.asked == ["metadata.test"]  # refused on the resolved address
    assert sum(server.hits.values()) == hits_before


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/",
                                 "http://127.0.0.1:9/x.jpg", "http://[::1]:9/x.jpg",
                                 "http://10.0.0.1/x.jpg", "http://localhost:9/x.jpg",
                                 "http://metadata.google.internal/x"])
def test_literal_and_well_known_private_targets_are_refused_without_lookup(url: str) -> None:
    resolver = names()
    assert fetch_error(url, GUARDED, resolver).code == "forbidden_address"
    assert resolver.asked == []


def test_loopback_by_name_is_refused(server: Server) -> None:
    assert fetch_error(server.url("/ok.jpg", host="loopback.test"), GUARDED).code == (
        "forbidden_address"
    )


def test_timeout(server: Server) -> None:
    error = fetch_error(server.url("/slow"), FetchSettings(allow_private=True, timeout_s=0.3))
    assert error.code == "timeout"


def test_empty_body_and_bad_schemes(server: Server) -> None:
    assert fetch_error(server.url("/empty"), PRIVATE).code == "empty_file"
    assert fetch_error(server.url("/to/ftp"), PRIVATE).code == "download_failed"


def test_unknown_host_is_a_download_failure() -> None:
    error = fetch_error("http://nowhere.test/x.jpg?token=SECRET", GUARDED)
    assert error.code == "download_failed"
    assert "nowhere.test" in error.message and "SECRET" not in error.message


def test_refuses_an_unguarded_session(server: Server) -> None:
    async def go() -> bytes:
        async with aiohttp.ClientSession() as session:
            return await fetch_url(session, server.url("/ok.jpg"), GUARDED)

    with pytest.raises(ValueError, match="make_guarded_connector"):
        asyncio.run(go())


# --- the address policy -----------------------------------------------------------------------


@pytest.mark.parametrize(("address", "reason"), [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.1.2.3", "private"),
    ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("fc00::1", "private"),
    ("169.254.169.254", "cloud metadata"), ("fd00:ec2::254", "cloud metadata"),
    ("169.254.10.10", "link-local"), ("fe80::1%eth0", "link-local"),
    ("100.64.0.1", "shared (CGNAT)"), ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("240.0.0.1", "private"),
    ("::ffff:127.0.0.1", "loopback"), ("64:ff9b::a9fe:a9fe", "cloud metadata"),
    ("2002:7f00:1::", "loopback"),
])
def test_forbidden_addresses(address: str, reason: str) -> None:
    assert forbidden_reason(address) == reason


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", FAKE_PUBLIC_IP])
def test_public_addresses_are_allowed(address: str) -> None:
    assert forbidden_reason(address) is None
    assert ipaddress.ip_address(address).is_global


# --- the sync facade --------------------------------------------------------------------------


def test_url_fetcher_shares_one_session_across_threads(server: Server) -> None:
    fetcher = UrlFetcher(PRIVATE)
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            bodies = list(pool.map(fetcher.fetch, [server.url("/ok.jpg")] * 8))
        assert bodies == [BODY] * 8
        with pytest.raises(ImageError) as caught:
            fetcher.fetch(server.url("/status/404"))
        assert caught.value.code == "not_found"
    finally:
        fetcher.close()
        fetcher.close()  # idempotent


def test_url_fetcher_guards_by_default(server: Server) -> None:
    fetcher = UrlFetcher(FetchSettings())
    try:
        with pytest.raises(ImageError) as caught:
            fetcher.fetch(server.url("/ok.jpg"))
        assert caught.value.code == "forbidden_address"
    finally:
        fetcher.close()


def test_read_image_bytes_dispatches(server: Server, tmp_path: Path) -> None:
    local = tmp_path / "a.jpg"
    local.write_bytes(BODY)
    assert read_image_bytes(server.url("/ok.jpg"), PRIVATE) == BODY
    assert read_image_bytes(str(local), PRIVATE) == BODY
    assert resources.find(("fetcher", PRIVATE)) is None, "a one-off read leaves no session open"


def test_one_readers_close_does_not_cut_another_readers_downloads(server: Server) -> None:
    # Two DoFns in one process share the download session; the first to tear down must not
    # close it under the second, which may be in the middle of downloads.
    first, second = ImageReader(PRIVATE), ImageReader(PRIVATE)
    assert first.read(server.url("/ok.jpg")) == BODY
    in_flight = [second.submit(server.url("/ok.jpg")) for _ in range(8)]
    first.close()
    assert [f.result(10) for f in in_flight] == [BODY] * 8
    assert second.read(server.url("/ok.jpg")) == BODY
    shared = resources.find(("fetcher", PRIVATE))
    assert shared is not None
    second.close()
    assert resources.find(("fetcher", PRIVATE)) is None, "the last holder closed it"
    assert shared._session is None


# --- read_uri_bytes ---------------------------------------------------------------------------


def test_read_uri_bytes(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    path.write_bytes(BODY)
    assert read_uri_bytes(str(path), max_bytes=len(BODY)) == BODY
    (tmp_path / "a.jpg.gz").write_bytes(BODY)  # not gunzipped behind our back
    assert read_uri_bytes(str(tmp_path / "a.jpg.gz"), max_bytes=len(BODY)) == BODY


@pytest.mark.parametrize(("name", "content", "code"), [
    ("missing.jpg", None, "not_found"),
    ("", None, "read_error"),  # the directory itself
    ("empty.jpg", b"", "empty_file"),
    ("big.jpg", b"z" * 101, "too_large"),
])
def test_read_uri_bytes_failures(
    tmp_path: Path, name: str, content: bytes | None, code: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageError) as caught:
        read_uri_bytes(str(path), max_bytes=100)
    assert (caught.value.code, caught.value.stage) == (code, "read")


class _StatusError(Exception):
    """Shaped like google.api_core's errors: an HTTP status in `.code`."""

    def __init__(self, code: int) -> None:
        super().__init__(f"HTTP {code}")
        self.code = code


@pytest.mark.parametrize(("error", "code"), [
    (FileNotFoundError(2, "gone"), "not_found"),
    (PermissionError(13, "no"), "permission_denied"),
    (_StatusError(404), "not_found"),
    (_StatusError(403), "permission_denied"),
    (BeamIOError("match failed", {"gs://b/x.jpg": _StatusError(404)}), "not_found"),
    (RuntimeError("boom"), "read_error"),
])
def test_filesystem_errors_map_to_read_codes(error: Exception, code: str) -> None:
    # Object stores cannot run here (GCS is the Dataflow issue's); their error shapes can.
    assert _read_error(error).code == code


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_read_uri_bytes_permission_denied(tmp_path: Path) -> None:
    path = tmp_path / "secret.jpg"
    path.write_bytes(BODY)
    path.chmod(0)
    with pytest.raises(ImageError) as caught:
        read_uri_bytes(str(path), max_bytes=1000)
    assert caught.value.code == "permission_denied"


def test_read_uri_bytes_is_not_for_urls() -> None:
    with pytest.raises(ValueError):
        read_uri_bytes("https://example.org/a.jpg", max_bytes=10)
