"""Pure parts of the simulator, without a socket: windows, durations, schemas, redaction."""

from __future__ import annotations

import json
import math

import pytest
from jsonschema import Draft202012Validator

from beam_caption.simulator.apierror import SimError
from beam_caption.simulator.image_parts import ImageFacts, colour_name
from beam_caption.simulator.json_answers import ResponseFormat, answer_text, check_response_format
from beam_caption.simulator.ledger import redact
from beam_caption.simulator.ratelimit import RateLimiter, SlidingWindow, go_duration
from beam_caption.simulator.usage import cut_answer

FACTS = ImageFacts("0" * 64, 640, 480, "JPEG", 0.7, ("blue", "white"))


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (0.0004, "1ms"), (0.12, "120ms"), (1, "1s"), (1.5, "1.5s"), (1.2341, "1.235s"),
    (59.9996, "1m0s"), (60, "1m0s"), (360, "6m0s"), (90.25, "1m30.25s"), (3600, "1h0m0s"),
])
def test_go_durations_like_the_reset_headers(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_sliding_window_wait_is_exact() -> None:
    window = SlidingWindow(limit=10, window=60)
    window.add(0.0, 4)
    window.add(10.0, 6)
    assert window.wait_for(20.0, 1) == pytest.approx(40.0)   # the 4 at t=0 must expire
    assert window.wait_for(20.0, 5) == pytest.approx(50.0)   # both must expire
    assert math.isinf(window.wait_for(20.0, 11))              # can never fit
    assert window.remaining(61.0) == 4 and window.reset_after(61.0) == pytest.approx(9.0)
    assert SlidingWindow(0, 60).wait_for(0, 10**9) == 0       # 0 = unlimited


def test_rate_limiter_rejects_without_consuming() -> None:
    limiter = RateLimiter(rpm=1, tpm=0, window=1.0)
    limiter.admit(0.0, 100, "m")
    with pytest.raises(SimError) as info:
        limiter.admit(0.25, 100, "m")
    assert info.value.status == 429 and info.value.headers["retry-after-ms"] == "750"
    assert "Please try again in 750ms." in info.value.message
    limiter.admit(1.0, 100, "m")  # the rejected request did not take the slot
    assert limiter.headers(1.0)["x-ratelimit-remaining-requests"] == "0"


def test_answers_are_cut_at_max_completion_tokens() -> None:
    assert cut_answer("abcdefgh", None).finish_reason == "stop"
    cut = cut_answer("abcdefghij", 2)
    assert (cut.content, cut.completion_tokens, cut.finish_reason) == ("abcdefgh", 2, "length")


NESTED = {
    "type": "object", "additionalProperties": False,
    "required": ["caption", "objects", "meta", "score", "kind", "note"],
    "$defs": {"obj": {"type": "object", "additionalProperties": False,
                      "required": ["label", "count"],
                      "properties": {"label": {"type": "string"},
                                     "count": {"type": "integer", "minimum": 1}}}},
    "properties": {
        "caption": {"type": "string", "maxLength": 20},
        "objects": {"type": "array", "items": {"$ref": "#/$defs/obj"}, "minItems": 2},
        "meta": {"type": "object", "additionalProperties": False, "required": ["height"],
                 "properties": {"height": {"type": "number", "exclusiveMaximum": 100}}},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "kind": {"const": "photo"},
        "note": {"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]},
    },
}


def test_structured_answers_validate_against_nested_schemas() -> None:
    fmt = check_response_format({"type": "json_schema", "json_schema": {
        "name": "nested", "strict": True, "schema": NESTED}}, "prompt")
    answer = json.loads(answer_text(fmt, [FACTS]))
    Draft202012Validator(NESTED).validate(answer)
    assert len(answer["objects"]) >= 2 and answer["kind"] == "photo"
    assert answer["meta"]["height"] < 100


def test_structured_format_errors_name_the_problem() -> None:
    with pytest.raises(SimError, match="Missing 'b'"):
        check_response_format({"type": "json_schema", "json_schema": {
            "name": "x", "strict": True, "schema": {
                "type": "object", "additionalProperties": False, "required": ["a"],
                "properties": {"a": {"type": "string"}, "b": {"type": "string"}}}}}, "")
    with pytest.raises(SimError, match="pattern"):
        check_response_format({"type": "json_schema", "json_schema": {"name": "no spaces"}}, "")
    assert check_response_format(None, "") == ResponseFormat()


def test_redact_truncates_every_data_url_payload() -> None:
    payload = "A" * 100
    body = {"messages": [{"content": [{"image_url": {"url": f"data:image/png;base64,{payload}"}},
                                      {"text": "data: is not a URL here? " + "x" * 50}]}]}
    out = redact(body)
    assert out["messages"][0]["content"][0]["image_url"]["url"] == \
        "data:image/png;base64," + "A" * 32 + "..."
    assert body["messages"][0]["content"][0]["image_url"]["url"].endswith(payload)  # a copy


@pytest.mark.parametrize(("rgb", "name"), [
    ((0, 0, 0), "black"), ((255, 255, 255), "white"), ((128, 128, 128), "gray"),
    ((220, 30, 30), "red"), ((30, 200, 40), "green"), ((40, 90, 220), "blue"),
    ((240, 220, 40), "yellow"), ((110, 70, 30), "brown"),
])
def test_colour_names(rgb: tuple[int, int, int], name: str) -> None:
    assert colour_name(*rgb) == name
