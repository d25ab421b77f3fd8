"""Contract tests for client.py against the official OpenAI schemas (tests/contract/schemas.py).

Every request body build_request can produce must validate against CreateChatCompletionRequest,
and the recorded samples that parse_response reads must match the documented response shapes, so
the unit tests in tests/unit/test_client.py parse what the API really sends.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from beam_caption.api.request import RequestSettings, build_request
from tests.contract.schemas import errors

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def _tiny_jpeg() -> bytes:
    """A real 8x8 JPEG, so the data URL is what the pipeline would send."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, "JPEG")
    return buffer.getvalue()


TINY_JPEG = _tiny_jpeg()

SETTINGS = [
    RequestSettings(model="gpt-5.4-nano", prompt="Describe this photo in one sentence."),
    RequestSettings(model="gpt-4o-mini", prompt="Alt text, please.", system_prompt="Be brief.",
                    detail="low", max_output_tokens=30, temperature=0.2,
                    token_param="max_tokens"),
    RequestSettings(model="gpt-5.4-mini", prompt="p", detail="high",
                    response_format={"type": "json_schema", "json_schema": {
                        "name": "caption", "strict": True, "schema": {
                            "type": "object", "properties": {"caption": {"type": "string"}},
                            "required": ["caption"], "additionalProperties": False}}},
                    extra_body=(("reasoning_effort", "minimal"), ("service_tier", "flex"),
                                ("seed", 1))),
]


@pytest.mark.parametrize("settings", SETTINGS, ids=["defaults", "legacy-params", "structured"])
def test_build_request_matches_official_schema(settings: RequestSettings) -> None:
    body = build_request(settings, TINY_JPEG)
    assert errors("CreateChatCompletionRequest", body) == []
    # The schema checks what it can; JSON round-trip proves the body is sendable as is.
    assert json.loads(json.dumps(body)) == body


def test_schema_catches_a_broken_request() -> None:
    """The validator is live: a body with a wrong detail value and no messages is rejected."""
    body = build_request(SETTINGS[0], TINY_JPEG)
    body["messages"][0]["content"][1]["image_url"]["detail"] = "medium"
    assert errors("CreateChatCompletionRequest", body) != []
    assert errors("CreateChatCompletionRequest", {"model": "m"}) != []


@pytest.mark.parametrize("name", ["chat_completion.json", "chat_completion_details.json",
                                  "content_filter.json", "finish_length.json"])
def test_response_samples_match_official_schema(name: str) -> None:
    sample = json.loads((SAMPLES / name).read_text(encoding="utf-8"))
    assert errors("CreateChatCompletionResponse", sample) == []


@pytest.mark.parametrize("name", ["error_429_rate_limit.json", "error_429_insufficient_quota.json",
                                  "error_400_invalid_image.json", "error_401_invalid_api_key.json"])
def test_error_samples_match_official_schema(name: str) -> None:
    sample = json.loads((SAMPLES / name).read_text(encoding="utf-8"))
    assert errors("ErrorResponse", sample) == []
