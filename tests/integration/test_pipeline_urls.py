"""http(s) inputs through the real pipeline: fetched on the worker, guarded, failures as rows."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from beam_caption.simulator import running_simulator
from tests.fixtures.photos import make_small_photos
from tests.integration.pipeline_helpers import IN_MEMORY, read_rows, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def image_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("served")
    make_small_photos(folder, 3)
    (folder / "huge.jpg").write_bytes(b"\xff\xd8" + b"\0" * (2 * 1024 * 1024))
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass


def _run(base: str, sim_url: str, out: Path, *extra: str) -> int:
    urls = [f"{base}/photo00000.jpg", f"{base}/photo00001.jpg", f"{base}/missing.jpg",
            f"{base}/huge.jpg"]
    args = ["run", "--output", str(out), "--base-url", sim_url, "--max-download-mb", "1",
            *IN_MEMORY, *extra]
    for url in urls:
        args += ["--input", url]
    return run_cli(*args)


def test_urls_are_fetched_and_failures_become_rows(image_server: str, tmp_path: Path) -> None:
    with running_simulator() as sim:
        code = _run(image_server, sim.base_url, tmp_path / "out", "--allow-private-urls")
    assert code == 0
    captions = {Path(r["uri"]).name for r in read_rows(tmp_path / "out", "captions")}
    errors = {Path(r["uri"]).name: r["code"] for r in read_rows(tmp_path / "out", "errors")}
    assert captions == {"photo00000.jpg", "photo00001.jpg"}
    assert errors == {"missing.jpg": "not_found", "huge.jpg": "too_large"}


def test_private_addresses_are_refused_without_the_flag(image_server: str,
                                                        tmp_path: Path) -> None:
    with running_simulator() as sim:
        code = _run(image_server, sim.base_url, tmp_path / "out")
        requests = sim.stats()["requests"]["total"]
    assert code == 0
    assert read_rows(tmp_path / "out", "captions") == []
    errors = read_rows(tmp_path / "out", "errors")
    assert len(errors) == 4 and {e["code"] for e in errors} == {"forbidden_address"}
    assert requests == 0


class _SlowCountingHandler(SimpleHTTPRequestHandler):
    """Serves files after a pause, and records the most requests it had in hand at once."""

    lock = threading.Lock()
    in_flight = 0
    most = 0

    def do_GET(self) -> None:
        cls = type(self)
        with cls.lock:
            cls.in_flight += 1
            cls.most = max(cls.most, cls.in_flight)
        try:
            threading.Event().wait(0.2)
            super().do_GET()
        finally:
            with cls.lock:
                cls.in_flight -= 1

    def log_message(self, *args: object) -> None:
        pass


def test_url_inputs_are_downloaded_several_at_a_time(tmp_path: Path) -> None:
    folder = tmp_path / "served"
    make_small_photos(folder, 24)
    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 functools.partial(_SlowCountingHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with running_simulator() as sim:
            args = ["run", "--output", str(tmp_path / "out"), "--base-url", sim.base_url,
                    "--allow-private-urls", *IN_MEMORY]
            for path in sorted(folder.iterdir()):
                args += ["--input", f"{base}/{path.name}"]
            assert run_cli(*args) == 0
    finally:
        server.shutdown()
    assert len(read_rows(tmp_path / "out", "captions")) == 24
    # One worker process with one DoFn thread: only its own lookahead can overlap downloads.
    assert _SlowCountingHandler.most >= 4, _SlowCountingHandler.most
