"""The Anthropic and Gemini wire formats against the schema fragments kept in
provider_schemas.json (transcribed from the providers' API references): what the adapters send,
what the simulator answers (realtime and batches), and the recorded samples. The simulator must
also refuse what the references forbid."""

from __future__ import annotations

import functools
import io
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from PIL import Image

from beam_caption.api.providers import get_provider
from beam_caption.api.request import RequestSettings
from beam_caption.batch import anthropic_wire, gemini_wire
from beam_caption.simulator import SimulatorHandle, running_simulator

SCHEMAS = Path(__file__).with_name("provider_schemas.json")
SAMPLES = Path(__file__).resolve().parents[1] / "samples"
KEY = "sk-contract-" + "k" * 20
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@functools.cache
def validator(name: str) -> Draft202012Validator:
    document = json.loads(SCHEMAS.read_text(encoding="utf-8"))
    return Draft202012Validator({"$ref": f"#/$defs/{name}", "$defs": document["$defs"]})


def valid(name: str, value: Any) -> bool:
    return not list(validator(name).iter_errors(value))


def _jpeg(size: tuple[int, int] = (320, 240)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 80, 40)).save(buf, "JPEG")
    return buf.getvalue()


SETTINGS = [RequestSettings(model="claude-haiku-4-5", prompt="Describe."),
            RequestSettings(model="claude-haiku-4-5", prompt="Describe.", system_prompt="Brief.",
                            temperature=0.3, max_output_tokens=200)]


@pytest.mark.parametrize("settings", SETTINGS)
def test_adapter_requests_follow_the_references(settings: RequestSettings) -> None:
    anthropic = get_provider("anthropic").build_request(settings, _jpeg())
    assert valid("AnthropicMessageCreateParams", anthropic)
    gemini = get_provider("gemini").build_request(settings, _jpeg())
    assert valid("GeminiGenerateContentRequest", gemini)
    assert valid("AnthropicBatchCreate", anthropic_wire.create_request(
        "m", [anthropic_wire.line("a" * 64, anthropic)], "n")[1])
    assert valid("GeminiBatchCreate", gemini_wire.create_request(
        "m", [gemini_wire.line("a" * 64, gemini)], "n")[1])


def test_the_schemas_are_strict_enough_to_catch_mistakes() -> None:
    body = get_provider("anthropic").build_request(SETTINGS[0], _jpeg())
    assert not valid("AnthropicMessageCreateParams", {**body, "max_completion_tokens": 5})
    assert not valid("AnthropicMessageCreateParams", {k: v for k, v in body.items()
                                                      if k != "max_tokens"})
    gemini = get_provider("gemini").build_request(SETTINGS[0], _jpeg())
    assert not valid("GeminiGenerateContentRequest", {**gemini, "max_tokens": 5})


def _sample_body(provider: str, name: str) -> Any:
    return json.loads((SAMPLES / provider / name).read_bytes().partition(b"\n\n")[2])


@pytest.mark.parametrize(("provider", "name", "schema"), [
    ("anthropic", "message_ok.http", "AnthropicMessage"),
    ("anthropic", "cache_usage.http", "AnthropicMessage"),
    ("anthropic", "refusal.http", "AnthropicMessage"),
    ("anthropic", "overloaded_529.http", "AnthropicError"),
    ("anthropic", "billing_402.http", "AnthropicError"),
    ("gemini", "generate_ok.http", "GeminiGenerateContentResponse"),
    ("gemini", "thinking.http", "GeminiGenerateContentResponse"),
    ("gemini", "safety.http", "GeminiGenerateContentResponse"),
    ("gemini", "prompt_blocked.http", "GeminiGenerateContentResponse"),
    ("gemini", "resource_exhausted_429.http", "GeminiError"),
    ("gemini", "bad_key_400.http", "GeminiError"),
])
def test_recorded_samples_follow_the_references(provider: str, name: str, schema: str) -> None:
    assert valid(schema, _sample_body(provider, name))


@pytest.fixture(scope="module")
def sim():
    with running_simulator(api_key=KEY, batch_seconds=0.2) as handle:
        yield handle


def call(sim: SimulatorHandle, provider: str, method: str, path: str,
         body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any, dict]:
    data = json.dumps(body).encode() if body is not None else None
    all_headers = {"Content-Type": "application/json",
                   **get_provider(provider).auth_headers(KEY), **(headers or {})}
    request = urllib.request.Request(sim.root_url + path, data=data, method=method,
                                     headers=all_headers)
    try:
        with OPENER.open(request, timeout=10) as response:
            raw, status, head = response.read(), response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        raw, status, head = exc.read(), exc.code, dict(exc.headers)
    try:
        return status, json.loads(raw), head
    except ValueError:
        return status, raw, head


def test_simulator_answers_follow_the_references(sim) -> None:
    settings = RequestSettings(model="claude-haiku-4-5", prompt="Describe.")
    status, message, _ = call(sim, "anthropic", "POST", "/v1/messages",
                              get_provider("anthropic").build_request(settings, _jpeg()))
    assert status == 200 and valid("AnthropicMessage", message)
    gsettings = RequestSettings(model="gemini-2.5-flash", prompt="Describe.")
    status, answer, _ = call(sim, "gemini", "POST",
                             "/v1beta/models/gemini-2.5-flash:generateContent",
                             get_provider("gemini").build_request(gsettings, _jpeg()))
    assert status == 200 and valid("GeminiGenerateContentResponse", answer)


@pytest.mark.parametrize(("provider", "path", "body", "status", "schema"), [
    ("anthropic", "/v1/messages", {"model": "claude-haiku-4-5", "messages": [
        {"role": "user", "content": "hi"}]}, 400, "AnthropicError"),       # no max_tokens
    ("anthropic", "/v1/messages", {"model": "claude-haiku-4-5", "max_tokens": 5,
                                   "max_completion_tokens": 5, "messages": [
        {"role": "user", "content": "hi"}]}, 400, "AnthropicError"),       # OpenAI's name
    ("anthropic", "/v1/messages", {"model": "no-such-model", "max_tokens": 5, "messages": [
        {"role": "user", "content": "hi"}]}, 404, "AnthropicError"),
    ("anthropic", "/v1/messages", {"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [
        {"role": "user", "content": [{"type": "image", "source": {
            "type": "base64", "media_type": "image/tiff", "data": "AAAA"}}]}]},
     400, "AnthropicError"),
    ("gemini", "/v1beta/models/gemini-2.5-flash:generateContent", {"contents": []}, 400,
     "GeminiError"),
    ("gemini", "/v1beta/models/gemini-2.5-flash:generateContent",
     {"contents": [{"parts": [{"text": "hi"}]}], "max_tokens": 3}, 400, "GeminiError"),
    ("gemini", "/v1beta/models/nope:generateContent",
     {"contents": [{"parts": [{"text": "hi"}]}]}, 404, "GeminiError"),
])
def test_simulator_refuses_what_the_references_forbid(sim, provider: str, path: str, body: Any,
                                                      status: int, schema: str) -> None:
    got, answer, _ = call(sim, provider, "POST", path, body)
    assert got == status and valid(schema, answer)


def test_simulator_checks_each_providers_key_header(sim) -> None:
    body = {"model": "claude-haiku-4-5", "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}]}
    status, answer, _ = call(sim, "anthropic", "POST", "/v1/messages", body,
                             {"x-api-key": "wrong-key-1234"})
    assert status == 401 and valid("AnthropicError", answer)
    assert "wrong-key" not in json.dumps(answer)
    status, answer, _ = call(sim, "anthropic", "POST", "/v1/messages", body,
                             {"anthropic-version": ""})
    assert status == 400
    status, answer, _ = call(sim, "gemini", "POST",
                             "/v1beta/models/gemini-2.5-flash:generateContent",
                             {"contents": [{"parts": [{"text": "hi"}]}]},
                             {"x-goog-api-key": "wrong-key-1234"})
    assert status == 400 and answer["error"]["details"][0]["reason"] == "API_KEY_INVALID"


def test_simulator_batches_follow_the_references(sim) -> None:
    settings = RequestSettings(model="claude-haiku-4-5", prompt="Describe.")
    params = get_provider("anthropic").build_request(settings, _jpeg())
    bad = {**params, "max_tokens": 0}
    status, batch, _ = call(sim, "anthropic", "POST", "/v1/messages/batches", {"requests": [
        {"custom_id": "ok-1", "params": params}, {"custom_id": "bad-1", "params": bad}]})
    assert status == 200 and valid("AnthropicMessageBatch", batch)
    batch = _wait(lambda: call(sim, "anthropic", "GET", f"/v1/messages/batches/{batch['id']}")[1],
                  lambda b: b["processing_status"] == "ended")
    assert valid("AnthropicMessageBatch", batch)
    assert batch["request_counts"] == {"processing": 0, "succeeded": 1, "errored": 1,
                                       "canceled": 0, "expired": 0}
    _, raw, _ = call(sim, "anthropic", "GET", f"/v1/messages/batches/{batch['id']}/results")
    lines = [json.loads(x) for x in raw.splitlines()]
    assert all(valid("AnthropicBatchResult", x) for x in lines)
    assert [x["result"]["type"] for x in lines] == ["succeeded", "errored"]
    gsettings = RequestSettings(model="gemini-2.5-flash", prompt="Describe.")
    request = get_provider("gemini").build_request(gsettings, _jpeg())
    status, op, _ = call(sim, "gemini", "POST",
                         "/v1beta/models/gemini-2.5-flash:batchGenerateContent",
                         gemini_wire.create_request("gemini-2.5-flash", [
                             gemini_wire.line("k1", request),
                             gemini_wire.line("k2", {"contents": []})], "n")[1])
    assert status == 200 and valid("GeminiBatchOperation", op)
    op = _wait(lambda: call(sim, "gemini", "GET", f"/v1beta/{op['name']}")[1],
               lambda o: o.get("done"))
    assert valid("GeminiBatchOperation", op)
    assert op["metadata"]["state"] == "BATCH_STATE_SUCCEEDED"
    lines = gemini_wire.parse_results(json.dumps(op).encode())
    assert [(x["custom_id"], x["response"]["status_code"]) for x in lines] == [
        ("k1", 200), ("k2", 400)]


def _wait(read: Any, done: Any, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.05)
