"""Every recorded Anthropic and Gemini response in tests/samples/{anthropic,gemini}/ through its
adapter's parse_response, with the exact outcome each must give (a ChatResult, or one ApiError
subclass with its row code, retry decision and billed usage), and the requests the adapters
build. The samples follow the providers' API references (Messages API, generateContent and
their error pages); they were written offline, not captured. No socket is opened."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

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
)
from beam_caption.api.providers import get_provider, provider_names
from beam_caption.api.request import RequestSettings
from beam_caption.api.response import ChatResult
from beam_caption.api.retry import is_retryable
from beam_caption.api.usage import Usage
from beam_caption.errors import ConfigError

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
NOW = 1_775_000_000.0  # 2026-03-31T23:33:20Z, the samples' clock


def read_sample(provider: str, name: str) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of a recorded whole response."""
    head, blank, body = (SAMPLES / provider / name).read_bytes().partition(b"\n\n")
    assert blank, f"{name}: no blank line after the headers"
    status_line, *lines = head.decode("latin-1").split("\n")
    headers = {}
    for line in lines:
        key, _, value = line.partition(":")
        headers[key] = value.strip()
    return int(status_line.split()[1]), headers, body


def parse(provider: str, name: str) -> ChatResult:
    status, headers, body = read_sample(provider, name)
    return get_provider(provider).parse_response(status, headers, body, now=NOW)


# (file, caption, finish_reason, request_id, Usage)
ANSWERS = [
    ("anthropic", "message_ok.http", "A red fox crossing a snowy field at dusk.", "stop",
     "req_011CUsimOk1", Usage(1540, 14, 1554, 0, 0)),
    # input_tokens is only the uncached part: prompt = 40 + 1000 written + 500 read.
    ("anthropic", "cache_usage.http", "Two kayaks on a calm lake.", "stop", "req_011CUsimCache",
     Usage(1540, 9, 1549, 500, 0)),
    ("anthropic", "max_tokens.http", "A crowded market street with", "length",
     "req_011CUsimLen", Usage(1200, 8, 1208, 0, 0)),
    ("anthropic", "no_usage.http", "A lighthouse on a cliff.", "stop", "msg_01NoUsage",
     Usage(reported=False)),
    ("gemini", "generate_ok.http", "A red fox crossing a snowy field at dusk.", "stop",
     "Q2vsaJ3PFo6b1MkP", Usage(1556, 11, 1567, 0, 0)),
    # Thinking is billed as output: candidates 8 + thoughts 40; the thought part is not read.
    ("gemini", "thinking.http", "Two kayaks on a calm lake.", "stop", "thinkId",
     Usage(300, 48, 348, 100, 40)),
    ("gemini", "max_tokens.http", "A crowded market", "length", "lenId", Usage(300, 4, 304)),
]


@pytest.mark.parametrize(("provider", "name", "caption", "reason", "request_id", "usage"),
                         ANSWERS, ids=[f"{a[0]}/{a[1]}" for a in ANSWERS])
def test_answers(provider: str, name: str, caption: str, reason: str, request_id: str,
                 usage: Usage) -> None:
    result = parse(provider, name)
    assert (result.caption, result.finish_reason, result.request_id, result.usage) == (
        caption, reason, request_id, usage)


# (file, error class, row code, retryable, retry_after, billed usage or None)
FAILURES = [
    ("anthropic", "refusal.http", Refused, "refusal", False, None, Usage(1200, 0, 1200)),
    ("anthropic", "empty_text.http", EmptyAnswer, "empty_answer", False, None,
     Usage(1200, 1, 1201)),
    ("anthropic", "overloaded_529.http", ServerError, "http_529", True, None, None),
    ("anthropic", "rate_limit_429.http", RateLimited, "rate_limited", True, 7.0, None),
    ("anthropic", "billing_402.http", QuotaExceeded, "insufficient_quota", False, None, None),
    ("anthropic", "auth_401.http", AuthError, "http_401", False, None, None),
    ("anthropic", "invalid_400.http", BadRequest, "http_400", False, None, None),
    ("anthropic", "error_in_200.http", ServerError, "http_529", True, None, None),
    ("anthropic", "proxy_html_502.http", ServerError, "http_502", True, None, None),
    ("gemini", "thoughts_ate_budget.http", EmptyAnswer, "empty_answer", False, None,
     Usage(300, 60, 360, 0, 60)),
    ("gemini", "safety.http", ContentFiltered, "content_filter", False, None,
     Usage(300, 0, 300)),
    ("gemini", "prompt_blocked.http", ContentFiltered, "content_filter", False, None,
     Usage(300, 0, 300)),
    ("gemini", "resource_exhausted_429.http", RateLimited, "rate_limited", True, 12.0, None),
    ("gemini", "daily_quota_429.http", QuotaExceeded, "insufficient_quota", False, None, None),
    ("gemini", "bad_key_400.http", AuthError, "http_400", False, None, None),
    ("gemini", "invalid_argument_400.http", BadRequest, "http_400", False, None, None),
    ("gemini", "unavailable_503.http", ServerError, "http_503", True, None, None),
    ("gemini", "not_found_404.http", BadRequest, "http_404", False, None, None),
    ("gemini", "no_candidates.http", ResponseError, "bad_response", True, None, None),
]


@pytest.mark.parametrize(("provider", "name", "cls", "code", "retryable", "retry_after",
                          "usage"), FAILURES, ids=[f"{f[0]}/{f[1]}" for f in FAILURES])
def test_failures(provider: str, name: str, cls: type[ApiError], code: str, retryable: bool,
                  retry_after: float | None, usage: Usage | None) -> None:
    with pytest.raises(ApiError) as caught:
        parse(provider, name)
    error = caught.value
    assert type(error) is cls
    assert (error.row_code, is_retryable(error), error.retry_after, error.usage) == (
        code, retryable, retry_after, usage)
    assert error.message and "\n" not in error.message


def test_every_sample_is_in_a_table() -> None:
    listed = {(p, n) for p, n, *_ in ANSWERS} | {(p, n) for p, n, *_ in FAILURES}
    on_disk = {(d.name, f.name) for d in SAMPLES.iterdir() if d.name in provider_names()
               for f in d.glob("*.http")}
    assert on_disk == listed


@pytest.mark.parametrize("provider", ["anthropic", "gemini"])
def test_junk_is_never_an_internal_error(provider: str) -> None:
    adapter = get_provider(provider)
    for status, body in ((200, b"{"), (200, b"[]"), (200, b"null"), (200, b'{"content": 3}'),
                         (500, b"\xff\xfe"), (200, b"<html><title>Sign in</title></html>"),
                         (429, b'{"error": {"details": "x"}}'), (200, b"[" * 100_000)):
        with pytest.raises(ApiError) as caught:
            adapter.parse_response(status, {}, body)
        assert isinstance(caught.value, ResponseError | HtmlResponse | ServerError
                          | RateLimited | BadRequest)


def test_anthropic_rate_limit_headers_feed_the_pacing() -> None:
    limits = parse("anthropic", "message_ok.http").rate_limits
    assert (limits.limit_requests, limits.remaining_requests, limits.remaining_tokens) == (
        4000, 3999, 398000)
    assert limits.reset_requests_s == pytest.approx(6.0)
    assert limits.reset_tokens_s == pytest.approx(1.0)


SETTINGS = RequestSettings(model="m-1", prompt="Describe.", system_prompt="Be brief.",
                           max_output_tokens=42, temperature=0.5)
JPEG = b"\xff\xd8\xff\xe0fake"


def test_anthropic_request_shape() -> None:
    adapter = get_provider("anthropic")
    body = adapter.build_request(SETTINGS, JPEG, prompt="Other prompt.")
    assert body == {"model": "m-1", "max_tokens": 42, "system": "Be brief.", "temperature": 0.5,
                    "messages": [{"role": "user", "content": [
                        {"type": "image", "source": {"type": "base64",
                                                     "media_type": "image/jpeg",
                                                     "data": base64.b64encode(JPEG).decode()}},
                        {"type": "text", "text": "Other prompt."}]}]}
    assert adapter.request_path("m-1") == "/v1/messages"
    assert adapter.auth_headers("k-123") == {"anthropic-version": "2023-06-01",
                                             "x-api-key": "k-123"}


def test_gemini_request_shape() -> None:
    adapter = get_provider("gemini")
    body = adapter.build_request(SETTINGS, JPEG)
    assert body == {"contents": [{"role": "user", "parts": [
        {"text": "Describe."},
        {"inline_data": {"mime_type": "image/jpeg", "data": base64.b64encode(JPEG).decode()}}]}],
        "generationConfig": {"maxOutputTokens": 42, "temperature": 0.5},
        "systemInstruction": {"parts": [{"text": "Be brief."}]}}
    assert adapter.request_path("models/gemini-2.5-flash") == \
        "/v1beta/models/gemini-2.5-flash:generateContent"
    assert adapter.request_path("a/b?c") == "/v1beta/models/a%2Fb%3Fc:generateContent"
    assert adapter.auth_headers("k-123") == {"x-goog-api-key": "k-123"}
    assert adapter.auth_headers(None) == {}


@pytest.mark.parametrize("provider", ["anthropic", "gemini"])
def test_response_format_is_refused_where_the_api_has_none(provider: str) -> None:
    with pytest.raises(ConfigError, match="--schema-mode prompt"):
        get_provider(provider).check_settings(RequestSettings(
            model="m", prompt="p", response_format={"type": "json_object"}))


def test_an_unknown_provider_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="openai, anthropic, gemini"):
        get_provider("mistral")


@pytest.mark.parametrize(("provider", "key"), [("anthropic", "sk-ant-api03-" + "Z" * 30),
                                               ("gemini", "AIzaSy" + "Q" * 33)])
def test_a_key_echoed_by_a_server_never_reaches_an_error_message(provider: str,
                                                                 key: str) -> None:
    body = (b'{"type": "error", "error": {"type": "authentication_error", "message": '
            b'"invalid x-api-key ' + key.encode() + b'"}}' if provider == "anthropic" else
            b'{"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "API key '
            + key.encode() + b' not valid"}}')
    with pytest.raises(ApiError) as caught:
        get_provider(provider).parse_response(401 if provider == "anthropic" else 400, {}, body)
    assert key not in str(caught.value) and key[8:20] not in caught.value.message
