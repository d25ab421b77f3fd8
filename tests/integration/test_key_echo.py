"""A server that echoes the API key it received in its error messages (some gateways do): the
exact key is masked in rows, logs and exceptions, whatever its shape (not only sk-... keys)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.fixtures.photos import make_small_photos
from tests.integration.pipeline_helpers import IN_MEMORY, read_rows, run_cli

pytestmark = pytest.mark.slow
KEY = "plain key 4711 without-a-known-shape"


class _Echo(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        sent = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        body = json.dumps({"error": {"message": f"Incorrect API key provided: {sent}.",
                                     "type": "invalid_request_error", "code": "bad_key"}})
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def echoing() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_a_key_the_server_echoes_is_never_written(echoing: str, tmp_path: Path,
                                                   capfd) -> None:
    make_small_photos(tmp_path / "photos", 2)
    out = tmp_path / "out"
    os.environ["ECHO_TEST_KEY"] = KEY
    try:
        run_cli("run", "--input", str(tmp_path / "photos" / "*.jpg"), "--output", str(out),
                "--base-url", echoing, "--api-key-env", "ECHO_TEST_KEY", *IN_MEMORY)
    finally:
        del os.environ["ECHO_TEST_KEY"]
    errors = read_rows(out, "errors")
    assert errors and all("Incorrect API key provided: [REDACTED]" in r["message"]
                          for r in errors)
    printed = capfd.readouterr()
    assert KEY not in printed.out + printed.err
    for path in out.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
