"""Every recorded response in tests/samples/cases/ through parse_response, with the exact outcome
each must give: a correct ChatResult, or one ApiError subclass with its row code.

The samples are whole HTTP responses (status line, headers, a blank line, the body) shaped as
OpenAI, Azure, vLLM, llama.cpp, Ollama, LiteLLM, OpenRouter and a few others send them;
tests/samples/README.md says where each shape comes from. No socket is opened.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from beam_caption.api.answer import finish_reason, strip_reasoning
from beam_caption.api.errors import (
    ApiError,
    BadRequest,
    ContentFiltered,
    EmptyAnswer,
    HtmlResponse,
    RateLimited,
    Refused,
    ResponseError,
    ServerError,
)
from beam_caption.api.ratelimits import RateLimitInfo
from beam_caption.api.response import ChatResult, parse_response, request_id_of
from beam_caption.api.retry import is_retryable
from beam_caption.api.usage import Usage
from beam_caption.cost.pricing import cost_usd, load_prices
from beam_caption.engine.jobs import CaptionOutcome
from beam_caption.engine.stop import FailureStreak
from beam_caption.pipeline.rows import error_stage
from tests.contract.schemas import errors as schema_errors

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
CASES_DIR = SAMPLES / "cases"
NOW = 1_775_000_000.0  # Tue, 31 Mar 2026 23:33:20 GMT: the samples' Date
NONE = RateLimitInfo()


def read_sample(name: str) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of a recorded response: the body is every byte after the first
    blank line, exactly as stored."""
    head, blank, body = (CASES_DIR / name).read_bytes().partition(b"\n\n")
    assert blank, f"{name}: no blank line after the headers"
    status_line, *lines = head.decode("latin-1").split("\n")
    headers = {}
    for line in lines:
        key, colon, value = line.partition(":")
        assert colon, f"{name}: not a header line: {line!r}"
        headers[key] = value.strip()
    return int(status_line.split()[1]), headers, body


@dataclass(frozen=True)
class Fails:
    """The one error a sample must raise, and everything it must carry."""

    cls: type[ApiError]
    row_code: str
    message: str
    status: int | None
    request_id: str | None = None
    retry_after: float | None = None
    usage: Usage | None = None  # billed: its cost is kept on the error row
    retryable: bool = False
    rate_limits: RateLimitInfo = field(default_factory=RateLimitInfo)


def ok(caption: str, finish: str | None, request_id: str | None, model: str, usage: Usage,
       rate_limits: RateLimitInfo = NONE) -> ChatResult:
    """The ChatResult a sample must give."""
    return ChatResult(caption, finish, request_id, model, usage, rate_limits)


HTML_NOTE = "(an HTML page from a proxy or web server, not the API)"
CASES: dict[str, ChatResult | Fails] = {
    # -- refusals and other billed answers that are no caption -----------------------------
    "openai_refusal.http": Fails(
        Refused, "refusal",
        "I'm sorry, but I can't help identify people from their facial features.", 200,
        "req_6c1f0e4b9a2d47e8b3f5a7c9d1e2f304", usage=Usage(431, 18, 449, 0, 0),
        rate_limits=RateLimitInfo(5000, 4999, 0.012, 4_000_000, 3_999_431, 0.008)),
    "azure_content_filter.http": Fails(
        ContentFiltered, "content_filter", "the provider's content filter withheld the answer",
        200, "5d0c8a3e-2f71-4c9b-a6e4-8b3d1f0c7a29", usage=Usage(367, 0, 367, 0, 0),
        rate_limits=RateLimitInfo(250, 249, None, 250_000, 249_120, None)),
    # -- reasoning: set aside, never in the caption -------------------------------------------
    "llamacpp_think_block.http": ok(
        "Fishing boats moored in a calm harbour at dawn.", "stop",
        "chatcmpl-Gq3vN8xL2mT7rW1kY5pB9sD4fH6jZ0cA", "Qwen3-VL-8B-Thinking-Q4_K_M.gguf",
        Usage(301, 52, 353, 0, 0)),  # also: usage without *_details, unknown `timings`
    "ollama_think_whitespace.http": ok(
        "Two children flying a kite on a windy beach.", "stop", "chatcmpl-417", "qwen3-vl:8b",
        Usage(318, 47, 365, 0, 0)),
    "vllm_think_closing_only.http": ok(
        "A red bicycle leaning against an ivy-topped brick wall.", "stop",
        "chatcmpl-5e1b8d3f0a2c4e69b7d1f3a5c9e0b2d4", "Qwen/Qwen3-VL-8B-Thinking",
        Usage(392, 41, 433, 0, 0)),
    "llamacpp_think_unterminated.http": Fails(
        EmptyAnswer, "empty_answer", "no answer text: the output cap was reached before the "
        "answer began; raise --max-output-tokens", 200,
        "chatcmpl-Rk7tB2wQ9nV4xL1mC8pF3sH6jD0gY5zA", usage=Usage(301, 60, 361, 0, 0)),
    "vllm_reasoning_fields.http": ok(
        "A tabby cat asleep on a sunlit windowsill.", "stop",
        "chatcmpl-8f3e2b7a1c9d4e6fa0b5c3d7e9f1a2b4", "Qwen/Qwen3-VL-8B-Thinking",
        Usage(389, 123, 512, 0, 0)),  # also: prompt_tokens_details null
    "vllm_reasoning_exhausted.http": Fails(
        EmptyAnswer, "empty_answer", "no answer text: the output cap was reached before the "
        "answer began; raise --max-output-tokens", 200, "0b9f5d2c7e3a4f18a6c4e2d0b8f71a35",
        usage=Usage(389, 60, 449, 0, 0)),
    "ollama_finish_null.http": ok(
        "A lighthouse on a rocky coast under storm clouds.", None, "chatcmpl-88", "qwen3-vl:8b",
        Usage(318, 36, 354, 0, 0)),  # also: Ollama's `reasoning` field
    # -- content as a list of parts ---------------------------------------------------------
    "mistral_content_parts.http": ok(
        "A snow-covered cabin among pine trees at dusk.", "stop",
        "b0b2d3c4e5f6478a9b0c1d2e3f4a5b6c", "magistral-medium-2509",
        Usage(1204, 87, 1291, 0, 0)),
    # -- usage: missing, without details, null details ---------------------------------------
    "usage_missing.http": ok(
        "A golden retriever catching a frisbee in a park.", "stop", "chatcmpl-a81f",
        "llava-v1.6-mistral-7b", Usage(reported=False)),
    "litellm_call_id_null_details.http": ok(
        "A bowl of ramen with a soft-boiled egg and spring onions.", "stop",
        "4f1c2e8a-7b3d-4a9e-b6c0-2d5f8e1a3c79", "ollama_chat/qwen2.5vl:7b",
        Usage(283, 15, 298, 0, 0)),
    # -- request ids: the provider's header first, cf-ray never ------------------------------
    "litellm_provider_request_id.http": ok(
        "A red fishing boat moored in a calm harbour at sunset.", "stop",
        "req_2b7d0c9e4f1a46b8a3c5e7f9d1b3a5c7", "gpt-5.4-nano-2026-03-17",
        Usage(412, 14, 426, 0, 0),
        RateLimitInfo(5000, 4999, 0.012, 4_000_000, 3_998_812, 0.017)),
    "openrouter_body_id.http": ok(
        "A yellow tram passing a café on a cobbled street.", "stop",
        "gen-1775000000-Xc7Lq2Wn9Rt4Vb1Zk8Mp", "openai/gpt-5.4-nano",
        Usage(405, 13, 418, 0, 0)),  # also: unknown fields at every level
    "anthropic_compat_request_id.http": ok(
        "A heron standing in shallow water among reeds.", "stop", "req_011CZb7Vx2Lq9Rt4Wn8Kp3Ms",
        "claude-haiku-4-5-20251001", Usage(1147, 15, 1162, 0, 0)),
    # -- finish reasons of other servers, in OpenAI's terms ----------------------------------
    "gateway_end_turn.http": ok(
        "A row of colourful beach huts under a clear sky.", "stop", "chatcmpl-7e2f9a4c1b8d",
        "claude-haiku-4-5", Usage(1139, 14, 1153, 0, 0)),
    "tgi_eos_token.http": ok(
        "An old stone bridge over a river in autumn.", "stop", None,  # TGI's id is ""
        "HuggingFaceM4/idefics2-8b-chatty", Usage(318, 20, 338, 0, 0)),
    "ollama_length.http": ok(
        "A crowded street market at night, with stalls selling lanterns, spices and", "length",
        "chatcmpl-903", "gemma3:12b", Usage(276, 16, 292, 0, 0)),
    # -- errors inside a 200, and a 200 with nothing in it -----------------------------------
    "openrouter_error_in_200.http": Fails(
        RateLimited, "rate_limited", "HTTP 200 with error 429 inside: Provider returned error: "
        "openai/gpt-5.4-nano is temporarily rate-limited upstream. Please retry shortly.", 429,
        retryable=True),
    "openrouter_choice_error.http": Fails(
        ServerError, "http_502", "HTTP 200 with error 502 inside: Upstream error from Google: "
        "the model is overloaded, please try again later", 502,
        "gen-1775000001-Hn3Kq8Vt1Wx6Lb9Rz2Mc", retryable=True),
    "openrouter_choices_empty.http": Fails(
        ResponseError, "bad_response", "HTTP 200: the response has no choices", 200,
        "gen-1775000002-Pq4Lr9Ws2Yx7Mc0Tz3Nd", retryable=True),
    # -- HTML pages from proxies, at any status ----------------------------------------------
    "portal_signin_200.http": Fails(
        HtmlResponse, "html_response", "HTTP 200: an HTML page (Sign in · Guest Wi-Fi) instead "
        "of the API's JSON: a proxy's sign-in or portal page, or a --base-url that is not the "
        "API", 200),
    "nginx_413.http": Fails(
        BadRequest, "http_413", f"HTTP 413: 413 Request Entity Too Large {HTML_NOTE}", 413),
    "cloudflare_502.http": Fails(
        ServerError, "http_502", f"HTTP 502: llm.example.com | 502: Bad gateway {HTML_NOTE}", 502,
        retryable=True),
    # -- Retry-After: an HTTP date, seconds, the provider's through LiteLLM, absent ----------
    "gateway_429_retry_after_date.http": Fails(
        RateLimited, "rate_limited", "HTTP 429: API rate limit exceeded", 429, retry_after=30.0,
        retryable=True),
    "litellm_429_retry_after_seconds.http": Fails(
        RateLimited, "rate_limited", "HTTP 429: Rate limit exceeded for api_key: 88dc28d0f030c55e"
        "d4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b. Limit type: requests. Current limit: "
        "60, Remaining: 0. Limit resets at: 2026-03-31 23:34:01 UTC", 429,
        "7d2e9f4a-1c6b-4e83-9a5d-0b3f8c2e6a14", retry_after=41.0, retryable=True,
        rate_limits=RateLimitInfo(limit_requests=60, remaining_requests=0)),
    "litellm_429_provider_retry_after.http": Fails(
        RateLimited, "rate_limited", "HTTP 429: litellm.RateLimitError: AzureException "
        "RateLimitError - Requests to the ChatCompletions_Create Operation under Azure OpenAI API "
        "version 2025-04-01-preview have exceeded token rate limit of your current AIServices S0 "
        "pricing tier. Please retry after 20 seconds. Please contact Azure suppo...", 429,
        "8e4b1d7a-3c9f-4a62-b5e0-7d2f9c4a1b38", retry_after=20.0, retryable=True),
    "ollama_503_no_retry_after.http": Fails(
        ServerError, "http_503", "HTTP 503 (api_error): server busy, please try again. maximum "
        "pending requests exceeded", 503, retryable=True),
}


def test_every_sample_has_a_case_and_a_readme_line() -> None:
    stored = sorted(p.name for p in CASES_DIR.glob("*"))
    assert stored == sorted(CASES)
    readme = (SAMPLES / "README.md").read_text(encoding="utf-8")
    assert [name for name in CASES if f"cases/{name}" not in readme] == []


@pytest.mark.parametrize("name", sorted(CASES))
def test_sample_gives_its_exact_outcome(name: str) -> None:
    status, headers, body = read_sample(name)
    expected = CASES[name]
    if isinstance(expected, ChatResult):
        result = parse_response(status, headers, body, now=NOW)
        assert result == expected
        assert result.caption and result.caption == result.caption.strip()
        return
    with pytest.raises(ApiError) as info:
        parse_response(status, headers, body, now=NOW)
    error = info.value
    assert type(error) is expected.cls
    got = (error.row_code, error.message, error.status, error.request_id, error.retry_after,
           error.usage, is_retryable(error), error.rate_limits)
    assert got == (expected.row_code, expected.message, expected.status, expected.request_id,
                   expected.retry_after, expected.usage, expected.retryable,
                   expected.rate_limits)


@pytest.mark.parametrize("name", ["openai_refusal.http", "azure_content_filter.http"])
def test_openai_shaped_samples_match_the_official_schema(name: str) -> None:
    _, _, body = read_sample(name)
    assert schema_errors("CreateChatCompletionResponse", json.loads(body)) == []


@pytest.mark.parametrize("name", ["openai_refusal.http", "llamacpp_think_unterminated.http",
                                  "vllm_reasoning_exhausted.http", "azure_content_filter.http"])
def test_billed_answers_that_are_no_caption_keep_their_cost(name: str) -> None:
    # engine.py prices error.usage (cost_usd) for the final outcome; CaptionOutcome then counts
    # it as an answer (journaled at once, never sent again) and pipeline/caption.py's
    # outcome_row writes the error row with that cost, at stage "response".
    status, headers, body = read_sample(name)
    with pytest.raises(ApiError) as info:
        parse_response(status, headers, body, now=NOW)
    error = info.value
    cost = cost_usd(load_prices()["gpt-5.4-nano"], error.usage)
    assert cost is not None and cost > 0
    outcome = CaptionOutcome(error=error, attempts=1, cost_usd=cost)
    assert outcome.carries_answer
    # pipeline/rows.py's _RESPONSE_CODES does not list empty_answer yet (its stage is then
    # "request"); the cost is kept either way.
    assert error_stage(error.row_code) == "response" or error.row_code == "empty_answer"


def test_a_streak_of_billed_non_answers_before_any_caption_stops_the_run() -> None:
    # An output cap too small for a reasoning model makes every answer empty, and each is billed:
    # as BadRequests, they stop the run after the same streak as 400s (engine/stop.py).
    status, headers, body = read_sample("vllm_reasoning_exhausted.http")
    with pytest.raises(EmptyAnswer) as info:
        parse_response(status, headers, body)
    streak = FailureStreak(threshold=8)
    reasons = [streak.failure(info.value) for _ in range(8)]
    assert reasons[:7] == [None] * 7
    assert reasons[7] is not None and reasons[7].code == "empty_answer"
    after_a_caption = FailureStreak(threshold=8)
    after_a_caption.success()
    assert all(after_a_caption.failure(info.value) is None for _ in range(20))


def test_a_response_without_usage_has_an_unknown_cost_not_zero() -> None:
    status, headers, body = read_sample("usage_missing.http")
    result = parse_response(status, headers, body)
    assert cost_usd(load_prices()["gpt-5.4-nano"], result.usage) is None


# -- no body or header is able to make the parser fail otherwise ---------------------------------

JUNK_BODIES = [
    b"", b"null", b"[]", b'"text"', b"{}", b"\xff\xfe\x00", b"<html>", b"<!-- x -->", b"{" * 50_000,
    b'{"choices": null}', b'{"choices": [null]}', b'{"choices": ["x"]}', b'{"choices": {}}',
    b'{"choices": [{"message": "hi"}]}', b'{"choices": [{"message": {"content": 5}}]}',
    b'{"choices": [{"message": {"content": [1, null, {"type": "text", "text": 7}]}}]}',
    b'{"choices": [{"message": {"content": "x", "refusal": 3}, "finish_reason": 9}],'
    b' "usage": [], "id": 5, "model": {}}',
    b'{"choices": [{"message": {"content": "<think>"}}]}',
    b'{"choices": [{"message": {"content": "</think>"}, "finish_reason": "stop"}]}',
    b'{"choices": [{"message": {"content": "ok"}, "error": "boom"}]}',
    b'{"error": []}', b'{"error": {"code": true}}', b'{"error": {"code": 99999}}',
    b'{"error": {"message": {"nested": 1}, "metadata": {"raw": 3}}}', b'{"error": "plain"}',
    b'{"detail": [{"loc": ["body"], "msg": "field required"}]}',
]
JUNK_HEADERS = {"Retry-After": "Fri, 99 Foo 2026 99:99:99 GMT", "retry-after-ms": "soon",
                "x-ratelimit-reset-tokens": "1e999s", "x-request-id": "  ", "cf-ray": "abc-FRA",
                "llm_provider-retry-after": "Sat, 01 Jan 10000 00:00:00 GMT"}


@pytest.mark.parametrize("status", [200, 400, 429, 500, 302])
@pytest.mark.parametrize("body", JUNK_BODIES, ids=range(len(JUNK_BODIES)))
def test_junk_gives_a_typed_error_or_a_real_caption(status: int, body: bytes) -> None:
    try:
        result = parse_response(status, JUNK_HEADERS, body, now=NOW)
    except ApiError as error:
        assert error.row_code and error.row_code != "internal_error"
        assert error.request_id is None and len(error.message) <= 300
    else:
        assert result.caption.strip() == result.caption != ""


# -- the pieces the table relies on ----------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("A cat.", ("A cat.", False)),
    ("<think>hm</think>A cat.", ("A cat.", True)),
    ("  \n<THINK>\nhm\n</THINK>\n\n A cat. ", ("A cat.", True)),
    ("<thinking>hm</thinking>A cat.", ("A cat.", True)),
    ("<think></think><think>again</think>A cat.", ("A cat.", True)),
    ("<think>cut off by the cap", ("", True)),
    ("<think></think>" * 8 + "A cat.", ("A cat.", True)),
    ("<think></think>" * 50_000 + "A cat.", ("", True)),  # bounded work; no caption in that
    ("reasoning opened by the template\n</think>\n\nA cat.", ("A cat.", True)),
    ("A cat <think>aside</think> on a mat.", ("A cat <think>aside</think> on a mat.", False)),
    ("A sign reading <think> then </think>.", ("A sign reading <think> then </think>.", False)),
])
def test_strip_reasoning(text: str, expected: tuple[str, bool]) -> None:
    assert strip_reasoning(text) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    ("stop", "stop"), ("STOP", "stop"), ("end_turn", "stop"), ("eos", "stop"),
    ("eos_token", "stop"), ("stop_sequence", "stop"), ("length", "length"),
    ("max_tokens", "length"), ("content_filter", "content_filter"), ("abort", "error"),
    ("tool_calls", "tool_calls"), ("something_new", "something_new"), (None, None), ("", None),
    (7, None),
])
def test_finish_reasons_in_openai_terms(raw: object, expected: str | None) -> None:
    assert finish_reason(raw) == expected


def test_request_id_prefers_the_providers_header_and_never_takes_cf_ray() -> None:
    every = {"cf-ray": "9e3a-FRA", "x-litellm-call-id": "call", "request-id": "anthropic",
             "llm_provider-request-id": "anthropic-via-litellm", "x-request-id": "server",
             "llm_provider-x-request-id": "provider"}
    order = ["provider", "server", "anthropic-via-litellm", "anthropic", "call", None]
    for expected in order:
        assert request_id_of(every) == expected
        every = {k: v for k, v in every.items() if v != expected}
