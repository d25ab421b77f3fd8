"""Rate limits (429 with accurate retry hints), rate-limit headers, latency and capacity."""

from __future__ import annotations

import re
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from beam_caption.simulator import running_simulator
from tests.integration.simclient import chat, chat_body

DURATION = re.compile(r"^(\d+h)?(\d+m)?(\d+(\.\d+)?s|\d+ms)$")
HEADERS = [f"x-ratelimit-{what}-{kind}" for kind in ("requests", "tokens")
           for what in ("limit", "remaining", "reset")]


def _seconds(duration: str) -> float:
    """Parse a Go-style duration as the headers carry it (1m0s, 1.5s, 120ms)."""
    match = DURATION.match(duration)
    assert match, duration
    hours = int(match.group(1)[:-1]) if match.group(1) else 0
    minutes = int(match.group(2)[:-1]) if match.group(2) else 0
    last = match.group(3)
    secs = float(last[:-2]) / 1000 if last.endswith("ms") else float(last[:-1])
    return hours * 3600 + minutes * 60 + secs


def _hint_seconds(message: str) -> float:
    match = re.search(r"Please try again in (\d+(?:\.\d+)?)(ms|s)\.", message)
    assert match, message
    value = float(match.group(1))
    return value / 1000 if match.group(2) == "ms" else value


def test_rpm_429_retry_hint_is_accurate() -> None:
    with running_simulator(rpm=3, window_seconds=1.0) as sim:
        first = time.monotonic()
        for _ in range(3):
            assert chat(sim.base_url, chat_body()).status == 200
        limited = chat(sim.base_url, chat_body())
        elapsed = time.monotonic() - first
        assert limited.status == 429
        assert limited.error["code"] == "rate_limit_exceeded"
        assert limited.error["type"] == "requests"
        wait_ms = int(limited.headers["retry-after-ms"])
        # The first request leaves the 1 s window 1 s after it was admitted.
        assert 1000 - elapsed * 1000 - 50 <= wait_ms <= 1000
        assert int(limited.headers["retry-after"]) == 1
        assert abs(_hint_seconds(limited.error["message"]) * 1000 - wait_ms) <= 1
        if wait_ms > 400:  # too early is still refused...
            time.sleep(wait_ms / 1000 - 0.3)
            assert chat(sim.base_url, chat_body()).status == 429
        time.sleep(max(0.0, first + 1.0 + 0.05 - time.monotonic()))
        assert chat(sim.base_url, chat_body()).status == 200  # ...on time is served
        assert sim.stats()["requests"]["by_outcome"]["rate_limited"] >= 1


def test_tpm_counts_prompt_plus_max_completion_tokens() -> None:
    with running_simulator(window_seconds=1.0) as sim:
        probe = chat(sim.base_url, chat_body(max_completion_tokens=20)).json()
        cost = probe["usage"]["prompt_tokens"] + 20
        sim.update(tpm=2 * cost)
        assert chat(sim.base_url, chat_body(max_completion_tokens=20)).status == 200
        second = chat(sim.base_url, chat_body(max_completion_tokens=20))
        assert second.status == 200
        assert int(second.headers["x-ratelimit-remaining-tokens"]) == 0
        third = chat(sim.base_url, chat_body(max_completion_tokens=20))
        assert third.status == 429 and third.error["type"] == "tokens"
        assert 0 < int(third.headers["retry-after-ms"]) <= 1000
        too_big = chat(sim.base_url, chat_body(max_completion_tokens=3 * cost))
        assert too_big.status == 429 and "Request too large" in too_big.error["message"]
        assert "retry-after-ms" not in too_big.headers  # retrying cannot help


def test_every_response_carries_request_id_and_rate_limit_headers() -> None:
    with running_simulator(rpm=100, tpm=100_000) as sim:
        ok = chat(sim.base_url, chat_body())
        bad = chat(sim.base_url, {"model": "gpt-4.1-nano"})
        for reply in (ok, bad):
            assert reply.headers["x-request-id"].startswith("req_")
            for name in HEADERS:
                assert name in reply.headers, name
            assert DURATION.match(reply.headers["x-ratelimit-reset-requests"])
            assert DURATION.match(reply.headers["x-ratelimit-reset-tokens"])
        assert ok.headers["x-ratelimit-limit-requests"] == "100"
        assert ok.headers["x-ratelimit-remaining-requests"] == "99"
        # One request in a 60 s window: back to the full limit in (just under) a minute.
        assert 59 <= _seconds(ok.headers["x-ratelimit-reset-requests"]) <= 60
        assert ok.headers["x-request-id"] != bad.headers["x-request-id"]


def test_max_concurrency_queues_requests() -> None:
    with running_simulator(latency_ms=150, latency_sigma=0.0, max_concurrency=2) as sim:
        started = time.monotonic()
        with ThreadPoolExecutor(6) as pool:
            replies = list(pool.map(lambda _: chat(sim.base_url, chat_body()), range(6)))
        elapsed = time.monotonic() - started
        assert [r.status for r in replies] == [200] * 6
        assert elapsed >= 3 * 0.15 - 0.02  # 6 requests, 2 at a time, 150 ms each
        sim.update(max_concurrency=0)
        started = time.monotonic()
        with ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda _: chat(sim.base_url, chat_body()), range(6)))
        assert time.monotonic() - started < 3 * 0.15  # unbounded: all at once


def test_latency_median_and_per_token_time() -> None:
    with running_simulator(latency_ms=60, latency_sigma=0.25, seed=3) as sim:
        times = []
        for _ in range(9):
            t0 = time.monotonic()
            assert chat(sim.base_url, chat_body()).status == 200
            times.append(time.monotonic() - t0)
        assert 0.04 <= statistics.median(times) <= 0.12
        sim.update(latency_ms=0, per_output_token_ms=10)
        t0 = time.monotonic()
        reply = chat(sim.base_url, chat_body()).json()
        assert time.monotonic() - t0 >= reply["usage"]["completion_tokens"] * 0.010 - 0.005
