"""The Batch API client: pure parsing and framing, and the blocking client against real servers."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from beam_caption.api.errors import AuthError, ResponseError, ServerError, TransportError
from beam_caption.batch.api import BatchClient, open_client
from beam_caption.batch.wire import (
    check_answer,
    create_body,
    multipart_frame,
    parse_batch,
    parse_jsonl,
)
from beam_caption.errors import ConfigError
from beam_caption.simulator import running_simulator
from tests.fixtures.app_server import serving
from tests.integration.simclient import chat_body


def test_parse_batch_reads_counts_files_and_errors() -> None:
    info = parse_batch({"id": "batch_1", "status": "failed", "input_file_id": "file-1",
                        "created_at": 1700000000, "output_file_id": None,
                        "request_counts": {"total": 5, "completed": 0, "failed": 5},
                        "errors": {"data": [{"code": "too_many_lines", "message": "too many"}]}})
    assert info.terminal and info.counts == {"total": 5, "completed": 0, "failed": 5}
    assert info.output_file_id is None and info.errors == ("too_many_lines: too many",)
    assert not parse_batch({"id": "b", "status": "in_progress"}).terminal
    with pytest.raises(ResponseError):
        parse_batch({"status": "completed"})


def test_create_body_and_multipart_frame() -> None:
    assert create_body("file-9", {"run": "r"}) == {
        "input_file_id": "file-9", "endpoint": "/v1/chat/completions",
        "completion_window": "24h", "metadata": {"run": "r"}}
    head, tail, ctype = multipart_frame('a"b.jsonl', boundary="XYZ")
    assert ctype == "multipart/form-data; boundary=XYZ"
    assert b'name="purpose"\r\n\r\nbatch\r\n' in head and b'filename="a_b.jsonl"' in head
    assert tail == b"\r\n--XYZ--\r\n"


def test_parse_jsonl_skips_blank_and_broken_lines() -> None:
    lines = [b'{"custom_id": "a"}', b"", b"{broken", b"[1]", b'{"custom_id": "b"}']
    assert [item["custom_id"] for item in parse_jsonl(lines)] == ["a", "b"]


def test_check_answer_raises_typed_errors_without_the_key() -> None:
    body = json.dumps({"error": {"message": "Incorrect API key provided: sk-proj-abcdef123456",
                                 "code": "invalid_api_key"}}).encode()
    with pytest.raises(AuthError) as caught:
        check_answer(401, {}, body)
    assert "abcdef123456" not in str(caught.value)
    with pytest.raises(ServerError):
        check_answer(503, {}, b"<html><title>Service Unavailable</title></html>")
    with pytest.raises(ResponseError):
        check_answer(200, {}, b"not json")


def test_a_remote_endpoint_needs_a_key(monkeypatch) -> None:
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(ConfigError, match="NO_SUCH_KEY_VAR"):
        open_client("https://api.example.invalid/v1", "NO_SUCH_KEY_VAR")
    assert open_client("http://127.0.0.1:9/v1", "NO_SUCH_KEY_VAR").base_url.endswith(":9/v1")


def _wait(client: BatchClient, batch_id: str) -> Any:
    deadline = time.monotonic() + 10
    while not (info := client.get(batch_id)).terminal:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return info


def test_upload_create_once_and_download_against_the_simulator(tmp_path: Path) -> None:
    lines = [{"custom_id": f"k{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": chat_body()} for i in range(3)]
    path = tmp_path / "shard.jsonl"
    path.write_bytes(b"".join(json.dumps(line).encode() + b"\n" for line in lines))
    with running_simulator(api_key="sk-unit", batch_seconds=0.2) as sim:
        client = BatchClient(sim.base_url, "sk-unit")
        file_id = client.upload(str(path), path.stat().st_size, "shard.jsonl")
        created = client.create_once(file_id, {"beam_caption_shard": "0"})
        again = client.create_once(file_id)  # e.g. a launcher that died before saving the id
        assert again.id == created.id, "a file that has a batch never gets a second one"
        done = _wait(client, created.id)
        results = client.download(done.output_file_id)
        assert sorted(r["custom_id"] for r in results) == ["k0", "k1", "k2"]
        assert client.cancel(created.id).status == "completed"  # 409 -> its current state
        with pytest.raises(AuthError):
            BatchClient(sim.base_url, "sk-wrong").get(created.id)


@contextlib.contextmanager
def _flaky_server(fail_creates: int, fail_gets: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """A Batch API stand-in whose creates succeed but answer 500 (the ambiguous case)."""
    state: dict[str, Any] = {"batches": [], "creates": 0, "gets": 0}

    async def create(request: web.Request) -> web.Response:
        body = await request.json()
        state["creates"] += 1
        batch = {"id": f"batch_{len(state['batches'])}", "status": "validating",
                 "input_file_id": body["input_file_id"], "created_at": int(time.time())}
        state["batches"].insert(0, batch)
        if state["creates"] <= fail_creates:
            return web.json_response({"error": {"message": "upstream hiccup"}}, status=500)
        return web.json_response(batch)

    async def listing(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": state["batches"], "has_more": False})

    async def retrieve(request: web.Request) -> web.Response:
        state["gets"] += 1
        if state["gets"] <= fail_gets:
            return web.json_response({"error": {"message": "busy"}}, status=503,
                                     headers={"retry-after-ms": "5"})
        return web.json_response(state["batches"][0])

    app = web.Application()
    app.router.add_post("/v1/batches", create)
    app.router.add_get("/v1/batches", listing)
    app.router.add_get("/v1/batches/{id}", retrieve)
    with serving(app, "flaky-batch-api") as url:
        yield f"{url}/v1", state


def test_an_ambiguous_create_finds_its_batch_instead_of_paying_twice() -> None:
    waits: list[float] = []
    with _flaky_server(fail_creates=1, fail_gets=2) as (url, state):
        client = BatchClient(url, None, sleep=waits.append, rng=lambda: 0.5)
        info = client.create_once("file-abc")
        assert state["creates"] == 1 and len(state["batches"]) == 1
        assert info.id == "batch_0"
        assert client.get("batch_0").id == "batch_0"  # two 503s, then the answer
    assert len(waits) == 2 and all(w >= 0.005 for w in waits), "retry-after-ms honoured"


def test_a_refused_connection_is_a_transport_error() -> None:
    client = BatchClient("http://127.0.0.1:9/v1", None, max_attempts=2, sleep=lambda s: None)
    with pytest.raises(TransportError):
        client.get("batch_x")
