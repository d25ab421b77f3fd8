"""The Anthropic and Gemini batch wires (batch/anthropic_wire.py, batch/gemini_wire.py): status
words, results normalized for collect (errored, canceled, expired, missing), collect's rows from
them, and the create call that is never retried after an ambiguous failure."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from beam_caption.api.errors import ServerError
from beam_caption.batch import anthropic_wire, gemini_wire
from beam_caption.batch.api import open_client
from beam_caption.batch.collect import shard_rows
from beam_caption.batch.formats import inline_wire, request_line
from beam_caption.config import CaptionConfig
from beam_caption.errors import ConfigError
from tests.fixtures.app_server import serving

MESSAGE = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
           "content": [{"type": "text", "text": "A boat."}], "stop_reason": "end_turn",
           "usage": {"input_tokens": 100, "output_tokens": 5}}


@pytest.mark.parametrize(("phase", "counts", "status", "output"), [
    ("in_progress", {"processing": 3}, "in_progress", None),
    ("canceling", {"processing": 1, "succeeded": 2}, "cancelling", None),
    ("ended", {"succeeded": 2, "errored": 1}, "completed", "b1"),
    ("ended", {"succeeded": 2, "canceled": 1}, "cancelled", "b1"),
    ("ended", {"succeeded": 2, "expired": 1, "canceled": 1}, "expired", "b1"),
])
def test_anthropic_status_words(phase: str, counts: dict, status: str,
                                output: str | None) -> None:
    info = anthropic_wire.parse_status({"id": "b1", "processing_status": phase,
                                        "request_counts": counts,
                                        "created_at": "2026-03-31T23:33:20Z"})
    assert (info.status, info.output_file_id, info.total) == (status, output,
                                                              sum(counts.values()))
    assert info.created_at == 1_775_000_000


def test_anthropic_results_are_normalized_for_collect() -> None:
    raw = b"\n".join(json.dumps(x).encode() for x in [
        {"custom_id": "a", "result": {"type": "succeeded", "message": MESSAGE}},
        {"custom_id": "b", "result": {"type": "errored", "error": {
            "type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}}},
        {"custom_id": "c", "result": {"type": "canceled"}},
        {"custom_id": "d", "result": {"type": "expired"}},
        {"custom_id": "e", "result": {"type": "something_new"}},
        {"no_custom_id": True}]) + b"\n{broken"
    lines = anthropic_wire.parse_results(raw)
    assert [x["custom_id"] for x in lines] == ["a", "b", "c", "d", "e"]
    assert lines[0]["response"]["status_code"] == 200
    assert lines[1]["response"]["status_code"] == 529
    assert [x["error"]["code"] for x in lines[2:]] == ["batch_cancelled", "batch_expired",
                                                        "batch_failed"]


@pytest.mark.parametrize("state", ["BATCH_STATE_SUCCEEDED", "JOB_STATE_SUCCEEDED"])
def test_gemini_states_in_both_spellings(state: str) -> None:
    info = gemini_wire.parse_status({"name": "batches/x", "metadata": {
        "state": state, "batchStats": {"requestCount": "3", "successfulRequestCount": "2",
                                       "failedRequestCount": "1"}}, "done": True})
    assert (info.status, info.output_file_id, info.total, info.completed, info.failed) == (
        "completed", "batches/x", 3, 2, 1)
    running = gemini_wire.parse_status({"name": "batches/x",
                                        "metadata": {"state": "BATCH_STATE_RUNNING"}})
    assert (running.status, running.output_file_id) == ("in_progress", None)


def test_gemini_results_map_grpc_codes_and_skip_unkeyed_entries() -> None:
    op = {"name": "batches/x", "metadata": {"state": "BATCH_STATE_EXPIRED", "output": {
        "inlinedResponses": {"inlinedResponses": [
            {"response": {"candidates": []}, "metadata": {"key": "a"}},
            {"error": {"code": 3, "message": "bad image"}, "metadata": {"key": "b"}},
            {"error": {"code": 8, "message": "quota"}, "metadata": {"key": "c"}},
            {"response": {}, "metadata": {}}]}}}}
    lines = gemini_wire.parse_results(json.dumps(op).encode())
    assert [(x["custom_id"], x["response"]["status_code"]) for x in lines] == [
        ("a", 200), ("b", 400), ("c", 429)]
    assert gemini_wire.parse_results(b"not json") == []


def test_collect_builds_rows_with_each_providers_parser() -> None:
    config = CaptionConfig.create(model="claude-haiku-4-5", provider="anthropic",
                                  base_url="http://127.0.0.1:9", run_id="r1")
    metas = [{"request_key": k, "uri": f"/p/{k}.jpg", "image_id": k * 64, "source_id": None,
              "width": 10, "height": 10, "sent_width": 10, "sent_height": 10, "bytes": 1,
              "source_key": None, "estimated_prompt_tokens": 100} for k in "abcd"]
    raw = b"\n".join(json.dumps(x).encode() for x in [
        {"custom_id": "a", "result": {"type": "succeeded", "message": MESSAGE}},
        {"custom_id": "b", "result": {"type": "errored", "error": {
            "type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}}},
        {"custom_id": "c", "result": {"type": "expired"}}])
    captions, errors = shard_rows(config, metas, anthropic_wire.parse_results(raw), "expired")
    assert [r["caption"] for r in captions] == ["A boat."]
    assert captions[0]["batch"] and captions[0]["cost_usd"] == pytest.approx(
        config.price.cost_usd(100, 5, batch=True))
    codes = {r["uri"]: r["code"] for r in errors}
    # d had no result line at all: the batch's final status says why.
    assert codes == {"/p/b.jpg": "http_400", "/p/c.jpg": "batch_expired",
                     "/p/d.jpg": "batch_expired"}


def test_request_lines_per_provider() -> None:
    body = {"x": 1}
    assert request_line("openai", "k", body)["url"] == "/v1/chat/completions"
    assert request_line("anthropic", "k", body) == {"custom_id": "k", "params": body}
    assert request_line("gemini", "k", body) == {"request": body, "metadata": {"key": "k"}}
    with pytest.raises(ConfigError, match="not available"):
        inline_wire("mistral")


@contextlib.contextmanager
def _batch_api(statuses: list[int]) -> Iterator[tuple[str, dict[str, Any]]]:
    """A Message Batches stand-in whose creates answer `statuses` in turn (then 200)."""
    state: dict[str, Any] = {"creates": 0}

    async def create(request: web.Request) -> web.Response:
        state["creates"] += 1
        state["body"] = await request.json()
        status = statuses.pop(0) if statuses else 200
        if status != 200:
            return web.json_response({"type": "error", "error": {
                "type": "api_error" if status >= 500 else "rate_limit_error",
                "message": "hiccup"}}, status=status, headers={"retry-after": "0"})
        return web.json_response({"id": "msgbatch_1", "processing_status": "in_progress",
                                  "request_counts": {"processing": 1}})

    app = web.Application()
    app.router.add_post("/v1/messages/batches", create)
    with serving(app, "anthropic-batch-api") as url:
        yield f"{url}", state


def _shard(tmp_path: Path) -> str:
    path = tmp_path / "shard.jsonl"
    path.write_text(json.dumps(anthropic_wire.line("k1", {"model": "m"})) + "\n")
    return str(path)


def test_a_refused_create_is_retried_but_an_ambiguous_one_never_is(tmp_path: Path) -> None:
    with _batch_api([429]) as (url, state):
        client = open_client(url, "NO_SUCH_KEY", provider="anthropic", model="m",
                             sleep=lambda s: None)
        file_id = client.upload(_shard(tmp_path), 0, "shard.jsonl")
        assert client.create_once(file_id, {"run": "r"}).id == "msgbatch_1"
        assert state["creates"] == 2  # the 429 sent nothing: retried
        assert state["body"] == {"requests": [{"custom_id": "k1", "params": {"model": "m"}}]}
    with _batch_api([500]) as (url, state):
        client = open_client(url, "NO_SUCH_KEY", provider="anthropic", model="m",
                             sleep=lambda s: None)
        with pytest.raises(ServerError):
            client.create_once(client.upload(_shard(tmp_path), 0, "shard.jsonl"))
        assert state["creates"] == 1  # the batch may exist: never a second one


def test_gemini_batches_are_listed_with_their_names() -> None:
    page = {"operations": [
        {"name": "batches/b2", "metadata": {"displayName": "beam-caption-r-1",
                                            "state": "BATCH_STATE_RUNNING"}},
        {"name": "batches/b1", "metadata": {"state": "BATCH_STATE_SUCCEEDED"}}, "junk"],
        "nextPageToken": "2"}
    found, token = gemini_wire.parse_list(page)
    assert [(name, info.id, info.status) for name, info in found] == [
        ("beam-caption-r-1", "batches/b2", "in_progress"), (None, "batches/b1", "completed")]
    assert token == "2" and gemini_wire.list_path(token).endswith("pageToken=2")
    assert gemini_wire.parse_list({"operations": []}) == ([], None)
