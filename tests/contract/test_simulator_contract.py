"""Contract: what the simulator sends validates against the official OpenAI schemas, and the
official request schema and the simulator agree on known-good and known-bad requests."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from beam_caption.simulator import SimulatorHandle, running_simulator
from tests.contract.schemas import errors, validator
from tests.integration.simclient import (
    chat,
    chat_body,
    data_url,
    get,
    image_bytes,
    post_json,
    upload,
)

IMAGE = data_url(image_bytes())


@pytest.fixture(scope="module")
def log_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sim") / "requests.jsonl"


@pytest.fixture(scope="module")
def sim(log_file: Path) -> Iterator[SimulatorHandle]:
    with running_simulator(api_key="test-key", batch_seconds=0.4,
                           log_path=str(log_file)) as handle:
        yield handle


def _assert_valid(schema: str, instance: Any) -> None:
    problems = errors(schema, instance)
    assert not problems, f"{schema}: {problems[:3]}"


def test_chat_responses_match_create_chat_completion_response(sim: SimulatorHandle) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "c", "schema": {
        "type": "object", "properties": {"caption": {"type": "string"}}}}}
    bodies = [chat_body(), chat_body("gpt-4o", detail="low", n=2),
              chat_body("gpt-5.4-nano", max_completion_tokens=2, reasoning_effort="low"),
              chat_body(response_format=fmt, temperature=0, seed=1)]
    for body in bodies:
        reply = chat(sim.base_url, body)
        assert reply.status == 200, reply.raw
        _assert_valid("CreateChatCompletionResponse", reply.json())
        _assert_valid("CompletionUsage", reply.json()["usage"])
    sim.update(rate_content_filter=1.0)
    try:
        _assert_valid("CreateChatCompletionResponse", chat(sim.base_url, chat_body()).json())
    finally:
        sim.update(rate_content_filter=0.0)


def test_every_error_matches_the_error_shape(sim: SimulatorHandle) -> None:
    replies = [chat(sim.base_url, chat_body(), key=None),
               chat(sim.base_url, chat_body(), key="wrong"),
               chat(sim.base_url, chat_body("no-such-model")),
               chat(sim.base_url, chat_body(detail="max")),
               get(sim.base_url, "/nowhere"),
               get(sim.base_url, "/files/file-missing")]
    for fault in ("rate_429", "rate_500", "rate_503", "rate_quota"):
        sim.update(**{fault: 1.0})
        try:
            replies.append(chat(sim.base_url, chat_body()))
        finally:
            sim.update(**{fault: 0.0})
    assert sorted({r.status for r in replies}) == [400, 401, 404, 429, 500, 503]
    for reply in replies:
        _assert_valid("ErrorResponse", reply.json())


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def test_files_and_batches_match_their_schemas(sim: SimulatorHandle) -> None:
    lines = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": chat_body(detail="max" if i == 2 else None)} for i in range(3)]
    file = upload(sim.base_url, _jsonl(lines)).json()
    _assert_valid("OpenAIFile", file)
    batch = post_json(sim.base_url, "/batches", {"input_file_id": file["id"],
                                                 "endpoint": "/v1/chat/completions",
                                                 "completion_window": "24h",
                                                 "metadata": {"run": "contract"}}).json()
    seen = {}
    deadline = time.monotonic() + 5
    while batch["status"] not in ("completed", "failed") and time.monotonic() < deadline:
        seen[batch["status"]] = batch
        time.sleep(0.02)
        batch = get(sim.base_url, f"/batches/{batch['id']}").json()
    seen[batch["status"]] = batch
    assert {"validating", "in_progress", "finalizing", "completed"} <= set(seen)
    for state in seen.values():
        _assert_valid("Batch", state)
    _assert_valid("ListBatchesResponse", get(sim.base_url, "/batches").json())
    for key, schema in (("output_file_id", "CreateChatCompletionResponse"),
                        ("error_file_id", "ErrorResponse")):
        _assert_valid("OpenAIFile", get(sim.base_url, f"/files/{batch[key]}").json())
        for raw in get(sim.base_url, f"/files/{batch[key]}/content").raw.splitlines():
            _assert_valid(schema, json.loads(raw)["response"]["body"])
    cancelled = upload(sim.base_url, _jsonl(lines[:1])).json()
    job = post_json(sim.base_url, "/batches", {"input_file_id": cancelled["id"],
                                               "endpoint": "/v1/chat/completions",
                                               "completion_window": "24h"}).json()
    _assert_valid("Batch", post_json(sim.base_url, f"/batches/{job['id']}/cancel", {}).json())


def _user(*parts: Any) -> dict[str, Any]:
    return {"model": "gpt-4.1-nano", "messages": [{"role": "user", "content": list(parts)}]}


GOOD = [
    chat_body(),
    chat_body("gpt-4o", detail="high", max_tokens=50, temperature=0.2, n=1, stream=False),
    chat_body("gpt-5.4-nano", max_completion_tokens=100, reasoning_effort="minimal",
              service_tier="flex", max_tokens=None),
    {"model": "gpt-4.1-mini", "messages": [{"role": "system", "content": "Be brief."},
                                           {"role": "user", "content": "Say hi."}]},
    {"model": "gpt-4.1-mini", "messages": [{"role": "developer", "content": [
        {"type": "text", "text": "Be brief."}]}, {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": IMAGE, "detail": "low"}}]}]},
]
SCHEMA_BAD = {
    "unknown content part type": _user({"type": "picture", "url": IMAGE}),
    "image_url without url": _user({"type": "image_url", "image_url": {"detail": "low"}}),
    "detail outside auto/low/high": _user({"type": "image_url", "image_url": {
        "url": IMAGE, "detail": "max"}}),
    "text part without text": _user({"type": "text"}),
    "unknown role": {"model": "gpt-4.1-nano", "messages": [{"role": "robot", "content": "x"}]},
    "no messages": {"model": "gpt-4.1-nano"},
    "empty messages": {"model": "gpt-4.1-nano", "messages": []},
    "no model": {"messages": [{"role": "user", "content": "x"}]},
    "n is zero": {**_user({"type": "image_url", "image_url": {"url": IMAGE}}), "n": 0},
    "temperature above 2": {**_user({"type": "text", "text": "x"}), "temperature": 3},
    "image in a system message": {"model": "gpt-4.1-nano", "messages": [
        {"role": "system", "content": [{"type": "image_url", "image_url": {"url": IMAGE}}]}]},
    "max_tokens not an integer": {**_user({"type": "text", "text": "x"}), "max_tokens": "50"},
}


@pytest.mark.parametrize("body", GOOD, ids=[f"good{i}" for i in range(len(GOOD))])
def test_schema_and_simulator_accept_good_requests(sim: SimulatorHandle,
                                                   body: dict[str, Any]) -> None:
    _assert_valid("CreateChatCompletionRequest", body)
    assert chat(sim.base_url, body).status == 200


@pytest.mark.parametrize("name", sorted(SCHEMA_BAD))
def test_schema_and_simulator_reject_bad_requests(sim: SimulatorHandle, name: str) -> None:
    body = SCHEMA_BAD[name]
    assert not validator("CreateChatCompletionRequest").is_valid(body), name
    reply = chat(sim.base_url, body)
    assert reply.status == 400, (name, reply.raw)


def test_logged_requests_are_schema_valid_and_redacted(sim: SimulatorHandle,
                                                       log_file: Path) -> None:
    big = data_url(image_bytes(300, 200))
    assert chat(sim.base_url, chat_body(image=image_bytes(300, 200))).status == 200
    records = [json.loads(line) for line in log_file.read_text().splitlines()]
    chats = [r for r in records if r["path"] == "/v1/chat/completions" and r["status"] == 200]
    assert chats
    for record in records:
        assert set(record) == {"started", "ts", "path", "status", "outcome", "model", "request",
                               "usage", "latency_ms"}
    for record in chats:
        _assert_valid("CreateChatCompletionRequest", record["request"])
        assert record["usage"]["prompt_tokens"] > 0
    url = chats[-1]["request"]["messages"][0]["content"][1]["image_url"]["url"]
    prefix = big.split(",", 1)[0] + ","
    assert url == prefix + big[len(prefix):len(prefix) + 32] + "..."

