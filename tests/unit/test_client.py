"""Unit tests for the sans-I/O api package: request building, response parsing, the retry predicate.

Response bodies come from tests/samples/ (see its README); no socket is opened.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from pathlib import Path

import aiohttp
import pytest
from multidict import CIMultiDict

from beam_caption.api.errors import (
    ApiError,
    AuthError,
    BadRequest,
    ContentFiltered,
    EmptyAnswer,
    HtmlResponse,
    QuotaExceeded,
    RateLimited,
    Refused,
    ResponseError,
    ServerError,
    Timeout,
    TransportError,
)
from beam_caption.api.ratelimits import (
    RateLimitInfo,
    parse_duration,
    parse_rate_limit_headers,
    retry_after_seconds,
)
from beam_caption.api.request import RequestSettings, build_request, request_key
from beam_caption.api.response import ChatResult, parse_response
from beam_caption.api.retry import is_retryable
from beam_caption.api.usage import Usage, parse_usage
from beam_caption.engine.transport import as_api_error
from beam_caption.errors import BeamCaptionError, ConfigError

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
JPEG = b"\xff\xd8\xff\xe0 not really a jpeg \xff\xd9"


def sample(name: str) -> bytes:
    """The bytes of a recorded response body."""
    return (SAMPLES / name).read_bytes()


def error_body(status: int, code: str | None, etype: str = "invalid_request_error") -> bytes:
    """An OpenAI-shaped error body."""
    return json.dumps({"error": {"message": f"something about {status}", "type": etype,
                                 "param": None, "code": code}}).encode()


# -- build_request ------------------------------------------------------------------------------

def test_build_request_puts_text_before_image_and_caps_tokens() -> None:
    settings = RequestSettings(model="gpt-5.4-nano", prompt="Describe this photo.")
    body = build_request(settings, JPEG)
    assert body == {
        "model": "gpt-5.4-nano",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Describe this photo."},
            {"type": "image_url", "image_url": {
                "url": "data:image/jpeg;base64," + base64.b64encode(JPEG).decode(),
                "detail": "auto"}},
        ]}],
        "max_completion_tokens": 60,
    }
    url = body["messages"][0]["content"][1]["image_url"]["url"]
    assert base64.b64decode(url.split(",", 1)[1]) == JPEG


def test_build_request_optional_fields() -> None:
    settings = RequestSettings(
        model="llava", prompt="p", system_prompt="You write alt text.", detail="low",
        max_output_tokens=25, temperature=0.0, token_param="max_tokens",
        response_format={"type": "json_object"}, extra_body=(("seed", 7), ("top_p", 0.5)))
    body = build_request(settings, JPEG, prompt="per-image prompt")
    assert body["messages"][0] == {"role": "system", "content": "You write alt text."}
    user = body["messages"][1]
    assert user["content"][0] == {"type": "text", "text": "per-image prompt"}
    assert user["content"][1]["image_url"]["detail"] == "low"
    assert body["max_tokens"] == 25 and "max_completion_tokens" not in body
    assert body["temperature"] == 0.0  # 0.0 is a value, not "unset"
    assert body["response_format"] == {"type": "json_object"}
    assert body["seed"] == 7 and body["top_p"] == 0.5


def test_build_request_omits_unset_temperature_and_system() -> None:
    body = build_request(RequestSettings(model="m", prompt="p"), JPEG)
    assert "temperature" not in body and "response_format" not in body
    assert [m["role"] for m in body["messages"]] == ["user"]


@pytest.mark.parametrize("kwargs, fragment", [
    ({"detail": "medium"}, "detail"),
    ({"token_param": "max_output_tokens"}, "token_param"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"model": ""}, "model"),
    ({"extra_body": (("messages", []),)}, "messages"),
])
def test_request_settings_reject_bad_values(kwargs: dict, fragment: str) -> None:
    base = {"model": "m", "prompt": "p"} | kwargs
    with pytest.raises(ConfigError, match=fragment):
        RequestSettings(**base)


# -- request_key --------------------------------------------------------------------------------

def test_request_key_is_sha256_of_id_and_canonical_json() -> None:
    expected = hashlib.sha256(b'abc\n{"a":[1,2],"b":"\xc3\xa9"}').hexdigest()
    assert request_key("abc", {"b": "é", "a": [1, 2]}) == expected
    assert request_key("abc", {"a": (1, 2), "b": "é"}) == expected  # key order, tuple vs list


def test_request_key_changes_with_any_setting() -> None:
    settings = RequestSettings(model="m", prompt="p")
    key = request_key("img", settings.key_params())
    assert key == request_key("img", RequestSettings(model="m", prompt="p").key_params())
    assert key != request_key("img2", settings.key_params())
    for other in (RequestSettings(model="m2", prompt="p"), RequestSettings(model="m", prompt="q"),
                  RequestSettings(model="m", prompt="p", detail="low"),
                  RequestSettings(model="m", prompt="p", max_output_tokens=61),
                  RequestSettings(model="m", prompt="p", extra_body=(("seed", 1),))):
        assert request_key("img", other.key_params()) != key
    assert request_key("img", settings.key_params("q")) == request_key(
        "img", RequestSettings(model="m", prompt="q").key_params())


# -- usage --------------------------------------------------------------------------------------

def test_parse_usage_reads_details() -> None:
    usage = parse_usage(json.loads(sample("chat_completion_details.json"))["usage"])
    assert usage == Usage(prompt_tokens=2751, completion_tokens=112, total_tokens=2863,
                          cached_tokens=1920, reasoning_tokens=64)


@pytest.mark.parametrize("obj, expected", [
    # No usage, or nothing readable in it: unknown (its cost is unknown too, never $0).
    (None, Usage(reported=False)),
    ({}, Usage(reported=False)),
    ("n/a", Usage(reported=False)),
    ({"prompt_tokens": None, "completion_tokens": "x", "total_tokens": -3}, Usage(reported=False)),
    ({"prompt_tokens": 0, "completion_tokens": 0}, Usage()),
    ({"prompt_tokens": 10, "completion_tokens": 5}, Usage(10, 5, 15, 0, 0)),
    ({"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
      "prompt_tokens_details": None, "completion_tokens_details": None}, Usage(10, 5, 15, 0, 0)),
    ({"prompt_tokens": 10, "completion_tokens": True, "total_tokens": 10}, Usage(10, 0, 10, 0, 0)),
    ({"prompt_tokens": 10, "completion_tokens": 2, "prompt_cache_hit_tokens": 8},
     Usage(10, 2, 12, 8, 0)),
])
def test_parse_usage_is_tolerant(obj: dict | None, expected: Usage) -> None:
    assert parse_usage(obj) == expected


# -- durations and headers ----------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [
    ("1s", 1.0), ("6m0s", 360.0), ("250ms", 0.25), ("1.5s", 1.5), ("2h3m4.5s", 7384.5),
    ("20ms", 0.02), ("0s", 0.0), ("7", 7.0), ("0.5", 0.5), ("1m30s", 90.0), ("100us", 1e-4),
    ("", None), ("abc", None), ("1x", None), ("s", None), ("1s garbage", None), ("-1s", None),
    ("inf", None),
])
def test_parse_duration(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


OPENAI_HEADERS = {
    "x-ratelimit-limit-requests": "500", "x-ratelimit-remaining-requests": "499",
    "x-ratelimit-reset-requests": "120ms", "x-ratelimit-limit-tokens": "200000",
    "x-ratelimit-remaining-tokens": "198470", "x-ratelimit-reset-tokens": "6m0s",
}


def test_parse_rate_limit_headers() -> None:
    expected = RateLimitInfo(500, 499, 0.12, 200000, 198470, 360.0)
    assert parse_rate_limit_headers(OPENAI_HEADERS) == expected
    upper = {k.upper(): v for k, v in OPENAI_HEADERS.items()}
    assert parse_rate_limit_headers(upper) == expected
    assert parse_rate_limit_headers(CIMultiDict(upper)) == expected


def test_rate_limit_headers_a_litellm_proxy_passes_on_with_a_prefix() -> None:
    # LiteLLM restates limit/remaining under their own names, the resets only prefixed.
    prefixed = {f"llm_provider-{k}": v for k, v in OPENAI_HEADERS.items()}
    assert parse_rate_limit_headers(prefixed) == RateLimitInfo(500, 499, 0.12, 200000, 198470,
                                                               360.0)
    own = {**prefixed, "x-ratelimit-remaining-requests": "7"}
    assert parse_rate_limit_headers(own).remaining_requests == 7


def test_parse_rate_limit_headers_missing_or_junk() -> None:
    assert parse_rate_limit_headers({}) == RateLimitInfo()
    info = parse_rate_limit_headers({"x-ratelimit-remaining-requests": "lots",
                                     "x-ratelimit-reset-tokens": "soon",
                                     "x-ratelimit-limit-tokens": "1e3"})
    assert info == RateLimitInfo(limit_tokens=1000)


NOW = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


@pytest.mark.parametrize("headers, message, expected", [
    ({"retry-after-ms": "250"}, None, 0.25),
    ({"Retry-After-Ms": "1500.5"}, None, 1.5005),
    ({"retry-after": "3"}, None, 3.0),
    ({"Retry-After": "0.75"}, None, 0.75),
    ({"retry-after": "Tue, 14 Nov 2023 22:13:50 GMT"}, None, 30.0),
    ({"retry-after": "Tue, 14 Nov 2023 22:13:50 -0000"}, None, 30.0),
    ({"retry-after": "Tue, 14 Nov 2023 22:00:00 GMT"}, None, 0.0),  # in the past: now
    ({}, "Rate limit reached ... Please try again in 1.234s. Visit ...", 1.234),
    ({}, "Please try again in 20ms.", 0.02),
    ({}, "please TRY AGAIN IN 1m30s", 90.0),
    ({}, "Rate limit reached.", None),
    ({}, None, None),
    # precedence: -ms over seconds over the message; unreadable values fall through
    ({"retry-after-ms": "100", "retry-after": "9"}, "try again in 5s", 0.1),
    ({"retry-after": "9"}, "try again in 5s", 9.0),
    ({"retry-after-ms": "soon", "retry-after": "2"}, None, 2.0),
    ({"retry-after": "whenever"}, "try again in 5s", 5.0),
    ({"retry-after-ms": "-5"}, None, None),
    ({"retry-after": "Fri, 99 Foo 2023 99:99:99 GMT"}, None, None),
    ({"retry-after": "Sat, 01 Jan 10000 00:00:00 GMT"}, None, None),
    # A LiteLLM proxy passes the provider's own on only with its prefix; its own come first.
    ({"llm_provider-retry-after": "20"}, None, 20.0),
    ({"llm_provider-retry-after-ms": "1500"}, None, 1.5),
    ({"retry-after": "3", "llm_provider-retry-after": "20"}, None, 3.0),
    ({"llm_provider-retry-after": "Tue, 14 Nov 2023 22:13:50 GMT"}, "try again in 5s", 30.0),
])
def test_retry_after_seconds(headers: dict, message: str | None, expected: float | None) -> None:
    got = retry_after_seconds(headers, message, now=NOW)
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_retry_after_seconds_accepts_cimultidict() -> None:
    assert retry_after_seconds(CIMultiDict({"RETRY-AFTER-MS": "40"})) == pytest.approx(0.04)


# -- parse_response: successes ------------------------------------------------------------------

def test_parse_response_normal_completion() -> None:
    headers = {"X-Request-Id": "req_abc123", **OPENAI_HEADERS}
    result = parse_response(200, headers, sample("chat_completion.json"))
    assert result == ChatResult(
        caption="A red fishing boat moored in a calm harbour at sunset.",
        finish_reason="stop", request_id="req_abc123", model="gpt-5.4-nano-2026-03-17",
        usage=Usage(412, 14, 426, 0, 0),
        rate_limits=RateLimitInfo(500, 499, 0.12, 200000, 198470, 360.0))


def test_parse_response_falls_back_to_body_id_and_reads_details() -> None:
    result = parse_response(200, {}, sample("chat_completion_details.json"))
    assert result.request_id == "chatcmpl-C1xYq2QJ7a3nP0dKfLw8tR5uVb6Zs"
    assert result.usage.cached_tokens == 1920 and result.usage.reasoning_tokens == 64
    assert result.rate_limits == RateLimitInfo()


def test_parse_response_length_is_a_result() -> None:
    result = parse_response(200, {}, sample("finish_length.json"))
    assert result.finish_reason == "length"
    assert result.caption.startswith("A crowded street market")


def test_parse_response_joins_list_content_and_never_returns_an_empty_caption() -> None:
    def body(content: object) -> bytes:
        return json.dumps({"choices": [{"message": {"content": content},
                                        "finish_reason": "length"}],
                           "usage": {"prompt_tokens": 300, "completion_tokens": 60}}).encode()

    parts = [{"type": "text", "text": "A cat "}, {"type": "text", "text": "asleep."}]
    assert parse_response(200, {}, body(parts)).caption == "A cat asleep."
    for empty in (None, "", "  \n", [], [{"type": "thinking", "thinking": "hm"}]):
        with pytest.raises(EmptyAnswer) as info:
            parse_response(200, {}, body(empty))
        # Billed, so its cost is kept: the output cap was spent before any answer.
        assert info.value.usage == Usage(300, 60, 360, 0, 0)
        assert info.value.row_code == "empty_answer" and not is_retryable(info.value)


def test_content_filter_carries_billed_usage() -> None:
    with pytest.raises(ContentFiltered) as info:
        parse_response(200, {"x-request-id": "req_cf"}, sample("content_filter.json"))
    error = info.value
    assert error.usage == Usage(367, 0, 367, 0, 0)
    assert (error.row_code, error.request_id, error.status) == ("content_filter", "req_cf", 200)
    assert not is_retryable(error)


# -- parse_response: errors, one case per status/code -------------------------------------------

ERROR_CASES = [
    # status, body, expected class, row_code, retryable
    (400, sample("error_400_invalid_image.json"), BadRequest, "http_400", False),
    (401, sample("error_401_invalid_api_key.json"), AuthError, "http_401", False),
    (403, error_body(403, "unsupported_country_region_territory"), AuthError, "http_403", False),
    (404, error_body(404, "model_not_found"), BadRequest, "model_not_found", False),
    (404, b"404 page not found", BadRequest, "http_404", False),
    (408, error_body(408, None), ApiError, "http_408", True),
    (409, error_body(409, None), ApiError, "http_409", True),
    (413, error_body(413, None), BadRequest, "http_413", False),
    (422, b'{"detail": "Unprocessable"}', BadRequest, "http_422", False),
    (400, error_body(400, "content_filter"), BadRequest, "content_filter", False),
    (429, sample("error_429_rate_limit.json"), RateLimited, "rate_limited", True),
    (429, sample("error_429_insufficient_quota.json"), QuotaExceeded, "insufficient_quota", False),
    (429, error_body(429, None, etype="insufficient_quota"), QuotaExceeded,
     "insufficient_quota", False),
    (500, sample("error_500.html"), ServerError, "http_500", True),
    (502, b"<html><head><title>502 Bad Gateway</title></head></html>", ServerError, "http_502",
     True),
    (503, error_body(503, None, "server_error"), ServerError, "http_503", True),
    (504, b"", ServerError, "http_504", True),
    (529, b'{"error": "overloaded"}', ServerError, "http_529", True),
    (302, b"", ApiError, "http_302", False),
    (200, sample("truncated.json"), ResponseError, "bad_response", True),
    (200, b"[1, 2]", ResponseError, "bad_response", True),
    (200, b'{"id": "x", "choices": []}', ResponseError, "bad_response", True),
    (200, b'{"error": {"message": "upstream timed out", "code": 502}}', ServerError, "http_502",
     True),
    (200, b'{"error": {"message": "odd"}}', ResponseError, "bad_response", True),
    (200, b'{"error": {"message": "slow down", "type": "rate_limit_error"}}', RateLimited,
     "rate_limited", True),
    (200, b'{"error": {"message": "bad", "code": "400"}, "choices": []}', BadRequest, "http_400",
     False),
    (200, sample("error_500.html"), HtmlResponse, "html_response", False),
    (200, b"\n\n   .", ResponseError, "bad_response", True),
    (200, b"[" * 100_000 + b"]" * 100_000, ResponseError, "bad_response", True),
]


@pytest.mark.parametrize("status, body, cls, row_code, retryable", ERROR_CASES,
                         ids=[f"{c[0]}-{c[3]}-{i}" for i, c in enumerate(ERROR_CASES)])
def test_parse_response_errors(status: int, body: bytes, cls: type, row_code: str,
                               retryable: bool) -> None:
    with pytest.raises(ApiError) as info:
        parse_response(status, {"x-request-id": "req_1"}, body)
    error = info.value
    assert type(error) is cls
    assert error.row_code == row_code
    assert is_retryable(error) is retryable
    assert error.request_id == "req_1"
    assert isinstance(error, BeamCaptionError) and str(error) == error.message
    assert len(error.message) <= 300 and "\n" not in error.message


def test_error_fields_from_openai_shape() -> None:
    with pytest.raises(RateLimited) as info:
        parse_response(429, OPENAI_HEADERS, sample("error_429_rate_limit.json"))
    error = info.value
    assert (error.status, error.code) == (429, "rate_limit_exceeded")
    assert error.retry_after == pytest.approx(0.161)  # from the message hint
    assert error.rate_limits == parse_rate_limit_headers(OPENAI_HEADERS)
    assert error.message.startswith("HTTP 429 (rate_limit_exceeded): Rate limit reached")


def test_retry_after_header_beats_message_hint() -> None:
    with pytest.raises(RateLimited) as info:
        parse_response(429, {"Retry-After": "2"}, sample("error_429_rate_limit.json"))
    assert info.value.retry_after == 2.0


def test_html_error_page_message_uses_title() -> None:
    with pytest.raises(ServerError) as info:
        parse_response(500, {}, sample("error_500.html"))
    assert info.value.message == ("HTTP 500: 500 Internal Server Error (an HTML page from a "
                                  "proxy or web server, not the API)")


def test_error_messages_mask_echoed_secrets() -> None:
    key = "sk-proj-" + "A1b2C3d4" * 6
    body = json.dumps({"error": {"message": f"bad key {key}; header was Bearer {key}",
                                 "type": "invalid_request_error", "code": "invalid_api_key"}})
    with pytest.raises(AuthError) as info:
        parse_response(401, {"authorization": f"Bearer {key}"}, body.encode())
    assert key not in info.value.message and "A1b2C3d4" not in info.value.message
    assert "sk-***" in info.value.message and "Bearer ***" in info.value.message


def test_long_messages_are_cut() -> None:
    body = error_body(400, None).replace(b"something about 400", b"x" * 5000)
    with pytest.raises(BadRequest) as info:
        parse_response(400, {}, body)
    assert len(info.value.message) == 300 and info.value.message.endswith("...")


# -- is_retryable and as_api_error beyond parse_response ---------------------------------------

RETRYABLE = [
    (RateLimited("r", status=429), True),
    (ServerError("s", status=500), True),
    (TransportError("t"), True),
    (Timeout("t"), True),
    (ResponseError("r", status=200), True),
    (ApiError("x", status=408), True),
    (ApiError("x", status=409), True),
    (ApiError("x", status=429, code="rate_limit_exceeded"), True),
    (ApiError("x", status=503), True),
    (ApiError("x", status=429, code="insufficient_quota"), False),
    (ApiError("x", status=404), False),
    (ApiError("x"), False),
    (QuotaExceeded("q", status=429), False),
    (BadRequest("b", status=400), False),
    (BadRequest("b", status=404), False),
    (AuthError("a", status=401), False),
    (AuthError("a", status=403), False),
    (ContentFiltered("c", status=200), False),
    (Refused("r", status=200), False),
    (EmptyAnswer("e", status=200), False),
    (HtmlResponse("h", status=200), False),
    (TimeoutError(), True),  # asyncio.TimeoutError is this builtin since 3.11
    (aiohttp.ServerTimeoutError(), True),
    (aiohttp.ServerDisconnectedError(), True),
    (aiohttp.ClientConnectionError(), True),
    (aiohttp.ClientOSError(104, "Connection reset by peer"), True),
    (aiohttp.ClientPayloadError("Response payload is not completed"), True),
    (ConnectionResetError(), True),
    (aiohttp.InvalidURL("not a url"), False),
    (ValueError("bug"), False),
    (KeyError("bug"), False),
    (asyncio.CancelledError(), False),
]


@pytest.mark.parametrize("error, expected", RETRYABLE,
                         ids=[f"{type(e).__name__}-{i}" for i, (e, _) in enumerate(RETRYABLE)])
def test_is_retryable(error: BaseException, expected: bool) -> None:
    # Transport exceptions become ApiErrors where they are caught (engine/transport.py); the
    # predicate itself sees ApiErrors only, and anything else is never retried.
    typed = error if isinstance(error, ApiError) else as_api_error(error)
    assert (typed is not None and is_retryable(typed)) is expected
    if not isinstance(error, ApiError):
        assert is_retryable(error) is False


def test_as_api_error_maps_transport_failures() -> None:
    assert type(as_api_error(TimeoutError())) is Timeout
    assert as_api_error(TimeoutError()).row_code == "timeout"
    disconnected = as_api_error(aiohttp.ServerDisconnectedError())
    assert type(disconnected) is TransportError
    assert disconnected.row_code == "connection_error"
    assert disconnected.status is None
    assert as_api_error(ValueError("x")) is None
    error = BadRequest("b", status=400)
    assert as_api_error(error) is error
