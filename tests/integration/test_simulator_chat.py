"""The simulator's chat endpoint: answers, usage accounting, captions, auth and validation."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from beam_caption.simulator import SimulatorHandle, running_simulator
from tests.integration.simclient import chat, chat_body, data_url, get, image_bytes

# The expected figures below are worked out by hand, not with beam_caption.cost.tokens (which the
# simulator itself uses): images by OpenAI's published vision rules, dollars at the published
# prices, text by the estimate cost/tokens.py documents (ceil(UTF-8 bytes / 4) tokens; a chat
# prompt adds 3 tokens per message and 3 to prime the reply).
PROMPT = "Describe this photo in one sentence."
# chat_body's prompt: 36 bytes -> ceil(36 / 4) = 9 tokens, + 3 (one message) + 3 (priming) = 15.
PROMPT_TEXT_TOKENS = 15


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorHandle]:
    with running_simulator(api_key="test-key", models=("my-local-vlm",)) as handle:
        yield handle


def test_answer_shape_caption_and_usage(sim: SimulatorHandle) -> None:
    reply = chat(sim.base_url, chat_body("gpt-4o", image_bytes(1024, 768, (40, 90, 220)),
                                         detail="high"))
    assert reply.status == 200, reply.raw
    body = reply.json()
    assert body["object"] == "chat.completion" and body["model"] == "gpt-4o"
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"] == \
        "A bright landscape-format photo, mostly blue, 1024x768."
    usage = body["usage"]
    assert len(PROMPT.encode("utf-8")) == 36  # as PROMPT_TEXT_TOKENS assumes
    # 1024x768 at high detail on gpt-4o: fits 2048x2048, shortest side already 768, so
    # ceil(1024 / 512) * ceil(768 / 512) = 2 * 2 tiles -> 85 + 4 * 170 = 765; + 15 text = 780.
    assert usage["prompt_tokens"] == 780
    # The caption is 55 bytes -> ceil(55 / 4) = 14.
    assert usage["completion_tokens"] == 14
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == 0
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0


@pytest.mark.parametrize(("model", "size", "detail", "image_tokens"), [
    # Patch rule: ceil(w / 32) * ceil(h / 32) patches (at most 1,536), times the multiplier,
    # rounded up.  32 * 32 = 1,024 patches * 1.62 = 1,658.88 -> 1,659.
    ("gpt-4.1-mini", (1024, 1024), None, 1659),
    # 57 * 75 = 4,275 patches > 1,536: shrunk to fit, 33 * 44 = 1,452 (the guide's example);
    # 1,452 * 1.62 = 2,352.24 -> 2,353.
    ("gpt-4.1-mini", (1800, 2400), None, 2353),
    # ceil(1086 / 32) * ceil(724 / 32) = 34 * 23 = 782 patches * 2.46 = 1,923.72 -> 1,924.
    ("gpt-4.1-nano", (1086, 724), None, 1924),
    # Tile rule, high: fit 2048x2048 -> 1024x2048, shortest side to 768 -> 768x1536,
    # 2 * 3 = 6 tiles -> 85 + 6 * 170 = 1,105 (the guide's example).
    ("gpt-4o", (2048, 4096), "high", 1105),
    # Low detail is the base alone.
    ("gpt-4o", (2048, 4096), "low", 85),
    # 2 * 2 = 4 patches * 2.46 = 9.84 -> 10.
    ("gpt-5.4-nano", (64, 48), "auto", 10),
])
def test_prompt_tokens_follow_the_model_rule(sim: SimulatorHandle, model: str,
                                             size: tuple[int, int], detail: str | None,
                                             image_tokens: int) -> None:
    reply = chat(sim.base_url, chat_body(model, image_bytes(*size), detail=detail))
    assert reply.status == 200, reply.raw
    assert reply.json()["usage"]["prompt_tokens"] == image_tokens + PROMPT_TEXT_TOKENS


@pytest.mark.parametrize(("model", "size", "detail", "prompt_tokens", "dollars"), [
    # Every answer is cut at 5 completion tokens. Prices in USD per million tokens.
    # 4 patches * 2.46 -> 10, + 15 = 25 prompt; 25 * 0.20 + 5 * 1.25 = 11.25 -> $0.00001125.
    ("gpt-5.4-nano", (64, 48), None, 25, 0.00001125),
    # 1,924 (above) + 15 = 1,939 prompt; 1,939 * 0.10 + 5 * 0.40 = 195.9 -> $0.0001959.
    ("gpt-4.1-nano", (1086, 724), None, 1939, 0.0001959),
    # 1,659 (above) + 15 = 1,674 prompt; 1,674 * 0.40 + 5 * 1.60 = 677.6 -> $0.0006776.
    ("gpt-4.1-mini", (1024, 1024), None, 1674, 0.0006776),
    # gpt-4o-mini tiles (vision guide): base 2,833, 5,667 per tile; 1024x1024 high -> 768x768,
    # 2 * 2 tiles -> 2,833 + 4 * 5,667 = 25,501, + 15 = 25,516 prompt;
    # 25,516 * 0.15 + 5 * 0.60 = 3,830.4 -> $0.0038304.
    ("gpt-4o-mini", (1024, 1024), "high", 25516, 0.0038304),
])
def test_the_ledger_bills_at_the_published_prices(sim: SimulatorHandle, model: str,
                                                  size: tuple[int, int], detail: str | None,
                                                  prompt_tokens: int, dollars: float) -> None:
    sim.reset()
    reply = chat(sim.base_url, chat_body(model, image_bytes(*size), detail=detail,
                                         max_completion_tokens=5))
    assert reply.status == 200, reply.raw
    usage = reply.json()["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (prompt_tokens, 5)
    stats = sim.stats()
    assert stats["tokens"]["realtime"] == {"prompt": prompt_tokens, "completion": 5, "cached": 0}
    assert stats["cost_usd"]["realtime"] == pytest.approx(dollars, rel=1e-9)


def test_captions_are_deterministic_and_about_the_image(sim: SimulatorHandle) -> None:
    dark = image_bytes(300, 600, (10, 10, 10), "PNG")
    first = chat(sim.base_url, chat_body(image=dark)).json()["choices"][0]["message"]["content"]
    again = chat(sim.base_url, chat_body(image=dark)).json()["choices"][0]["message"]["content"]
    assert first == again == "A very dark portrait-format image, mostly black, 300x600."
    bright = chat(sim.base_url, chat_body(image=image_bytes(500, 500, (250, 250, 250))))
    assert bright.json()["choices"][0]["message"]["content"] == \
        "A very bright square photo, mostly white, 500x500."


def test_max_completion_tokens_cuts_the_answer(sim: SimulatorHandle) -> None:
    reply = chat(sim.base_url, chat_body("gpt-5.4-nano", max_completion_tokens=3)).json()
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "length"
    assert reply["usage"]["completion_tokens"] == 3
    assert len(choice["message"]["content"].encode()) <= 12  # 3 tokens * 4 bytes


def test_n_choices_are_billed_per_choice(sim: SimulatorHandle) -> None:
    body = chat(sim.base_url, chat_body(n=2)).json()
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert body["choices"][0]["message"]["content"] == \
        "A bright landscape-format photo, mostly blue, 64x48."
    # That caption is 52 bytes -> ceil(52 / 4) = 13 tokens per choice, 2 * 13 = 26.
    assert body["usage"]["completion_tokens"] == 26


def test_json_schema_answer_validates_against_the_schema(sim: SimulatorHandle) -> None:
    from jsonschema import Draft202012Validator

    schema = {"type": "object", "additionalProperties": False,
              "required": ["caption", "colors", "width", "mood", "has_text"],
              "properties": {"caption": {"type": "string"},
                             "colors": {"type": "array", "items": {"type": "string"}},
                             "width": {"type": "integer"},
                             "mood": {"type": "string", "enum": ["calm", "busy"]},
                             "has_text": {"type": ["boolean", "null"]}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "caption", "strict": True,
                                                  "schema": schema}}
    reply = chat(sim.base_url, chat_body(image=image_bytes(640, 480), response_format=fmt))
    assert reply.status == 200, reply.raw
    answer = json.loads(reply.json()["choices"][0]["message"]["content"])
    Draft202012Validator(schema).validate(answer)
    assert answer["width"] == 640 and "blue" in answer["colors"]
    assert answer["caption"].endswith("640x480.")


def test_strict_schema_must_close_every_object(sim: SimulatorHandle) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": {
        "type": "object", "properties": {"caption": {"type": "string"}},
        "required": ["caption"]}}}
    reply = chat(sim.base_url, chat_body(response_format=fmt))
    assert reply.status == 400
    assert "additionalProperties" in reply.error["message"]


def test_json_object_needs_the_word_json(sim: SimulatorHandle) -> None:
    fmt = {"type": "json_object"}
    assert chat(sim.base_url, chat_body(response_format=fmt)).status == 400
    reply = chat(sim.base_url, chat_body(response_format=fmt, prompt="Answer in JSON."))
    assert reply.status == 200
    assert "caption" in json.loads(reply.json()["choices"][0]["message"]["content"])


def test_auth_missing_wrong_and_revoked_key(sim: SimulatorHandle) -> None:
    missing = chat(sim.base_url, chat_body(), key=None)
    assert missing.status == 401 and "didn't provide an API key" in missing.error["message"]
    wrong = chat(sim.base_url, chat_body(), key="sk-wrong-secret")
    assert wrong.status == 401 and wrong.error["code"] == "invalid_api_key"
    assert "sk-wrong-secret" not in wrong.raw.decode()
    try:
        sim.update(api_key="rotated")  # "revoke the key" mid-run
        assert chat(sim.base_url, chat_body()).status == 401
        assert chat(sim.base_url, chat_body(), key="rotated").status == 200
    finally:
        sim.update(api_key="test-key")
    assert get(sim.base_url, "/models", key="nope").status == 401


def test_unknown_model_is_404_and_extra_models_are_served(sim: SimulatorHandle) -> None:
    reply = chat(sim.base_url, chat_body("gpt-9-ultra"))
    assert reply.status == 404 and reply.error["code"] == "model_not_found"
    extra = chat(sim.base_url, chat_body("my-local-vlm"))
    assert extra.status == 200  # unpriced, patch rule at multiplier 1
    # 2 * 2 = 4 patches at multiplier 1, + 15 text = 19.
    assert extra.json()["usage"]["prompt_tokens"] == 19
    assert "my-local-vlm" in {m["id"] for m in get(sim.base_url, "/models").json()["data"]}


def _parts(*parts: dict) -> dict:
    return {"model": "gpt-4.1-nano", "messages": [{"role": "user", "content": list(parts)}]}


IMG = {"type": "image_url", "image_url": {"url": data_url(image_bytes())}}
BAD_REQUESTS = [
    ("unknown part type", _parts({"type": "picture", "url": "x"}),
     "messages[0].content[0].type", "invalid_value"),
    ("image_url without url", _parts({"type": "image_url", "image_url": {"detail": "low"}}),
     "messages[0].content[0].image_url.url", "missing_required_parameter"),
    ("detail max", _parts({"type": "image_url", "image_url": {
        "url": data_url(image_bytes()), "detail": "max"}}),
     "messages[0].content[0].image_url.detail", "invalid_value"),
    ("max_tokens on gpt-5", {**_parts(IMG), "model": "gpt-5.4-mini", "max_tokens": 50},
     "max_tokens", "unsupported_parameter"),
    ("max_tokens on o4", {**_parts(IMG), "model": "o4-mini", "max_tokens": 50},
     "max_tokens", "unsupported_parameter"),
    ("temperature on reasoning", {**_parts(IMG), "model": "gpt-5.4-nano", "temperature": 0.2},
     "temperature", "unsupported_value"),
    ("bad base64", _parts({"type": "image_url", "image_url": {
        "url": "data:image/jpeg;base64,@@not-base64@@"}}),
     "messages[0].content[0].image_url.url", "invalid_base64"),
    ("not an image", _parts({"type": "image_url", "image_url": {
        "url": data_url(b"%PDF-1.4 definitely not an image")}}),
     "messages[0].content[0].image_url.url", "invalid_image_format"),
    ("truncated jpeg", _parts({"type": "image_url", "image_url": {
        "url": data_url(image_bytes(256, 256)[:300])}}),
     "messages[0].content[0].image_url.url", "invalid_image_format"),
    ("remote image url", _parts({"type": "image_url", "image_url": {
        "url": "https://images.example.com/cat.jpg"}}),
     "messages[0].content[0].image_url.url", "invalid_image_url"),
    ("unknown parameter", {**_parts(IMG), "max_output_tokens": 5}, "max_output_tokens",
     "unknown_parameter"),
    ("empty messages", {"model": "gpt-4.1-nano", "messages": []}, "messages", "empty_array"),
    ("image in system message", {"model": "gpt-4.1-nano", "messages": [
        {"role": "system", "content": [IMG]}]}, "messages[0].content[0].type", "invalid_value"),
]


@pytest.mark.parametrize(("name", "body", "param", "code"), BAD_REQUESTS,
                         ids=[b[0] for b in BAD_REQUESTS])
def test_validation_rejects_what_the_api_rejects(sim: SimulatorHandle, name: str, body: dict,
                                                 param: str, code: str) -> None:
    reply = chat(sim.base_url, body)
    assert reply.status == 400, reply.raw
    assert reply.error["type"] == "invalid_request_error"
    assert (reply.error["param"], reply.error["code"]) == (param, code)


def test_unparseable_json_and_unknown_route(sim: SimulatorHandle) -> None:
    from tests.integration.simclient import request

    reply = request(sim.base_url, "POST", "/chat/completions", b"{not json",
                    {"Authorization": "Bearer test-key"})
    assert reply.status == 400 and "could not parse the JSON body" in reply.error["message"]
    assert get(sim.base_url, "/embeddings").status == 404


@pytest.fixture(scope="module")
def image_server() -> Iterator[tuple[str, bytes]]:
    payload = image_bytes(200, 100, (150, 20, 20), "PNG")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path == "/red.png"
            self.send_response(200 if found else 404)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            self.wfile.write(payload if found else b"")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", payload
    server.shutdown()
    server.server_close()


def test_loopback_image_urls_are_fetched(sim: SimulatorHandle,
                                         image_server: tuple[str, bytes]) -> None:
    root, payload = image_server
    sim.reset()
    body = _parts({"type": "text", "text": "?"},
                  {"type": "image_url", "image_url": {"url": f"{root}/red.png"}})
    reply = chat(sim.base_url, body)
    assert reply.status == 200, reply.raw
    assert reply.json()["choices"][0]["message"]["content"] == \
        "A softly lit landscape-format image, mostly red, 200x100."
    digest = hashlib.sha256(payload).hexdigest()
    assert sim.stats()["successes_by_image"] == {digest: 1}
    missing = chat(sim.base_url, _parts({"type": "image_url",
                                         "image_url": {"url": f"{root}/gone.png"}}))
    assert missing.status == 400 and missing.error["code"] == "invalid_image_url"
