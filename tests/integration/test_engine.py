"""The request engine driven directly, against a scripted in-process aiohttp server: each job's
own body and price, retries, hints, the spend share, stops and the interrupt's grace period."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from beam_caption.cost.pricing import load_prices
from beam_caption.engine.engine import AsyncEngine
from beam_caption.engine.jobs import CaptionJob, CaptionOutcome
from beam_caption.engine.loop import get_loop_thread
from beam_caption.engine.run_state import RunSettings, RunState
from beam_caption.engine.settings import EndpointConfig, LimitsConfig
from beam_caption.engine.stop import interrupt_reason
from tests.integration.scripted_server import Reply, ScriptedServer, serving

NANO = load_prices()["gpt-5.4-nano"]
MINI = load_prices()["gpt-4.1-mini"]


@pytest.fixture()
def server() -> Iterator[tuple[ScriptedServer, str]]:
    scripted = ScriptedServer()
    with serving(scripted) as url:
        yield scripted, url


def _engine(base_url: str, **limits: Any) -> AsyncEngine:
    engine = AsyncEngine(EndpointConfig(base_url=base_url, request_timeout_s=10),
                         LimitsConfig(backoff_base_s=0.01, **limits), get_loop_thread("engine"),
                         api_key="sk-test-engine")
    engine.open()
    return engine


def _job(run: RunState, n: int, *, price=NANO, prompt: str = "Describe it.",
         key: str | None = None, uri: str | None = None) -> CaptionJob:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": prompt}],
                       "n": n}).encode()
    return CaptionJob(key=key or f"key-{n}", uri=uri or f"/p/{n}.jpg", body=body,
                      estimated_prompt_tokens=100, max_output_tokens=60, price=price, run=run)


def _run_jobs(engine: AsyncEngine, jobs: list[CaptionJob],
              timeout: float = 20) -> list[CaptionOutcome]:
    futures = [engine.submit(job, lambda outcome: outcome) for job in jobs]
    return [future.result(timeout) for future in futures]


def _state(**settings: Any) -> RunState:
    return RunState(RunSettings(run_id=f"run-{time.monotonic_ns()}", **settings))


def test_each_job_sends_its_own_body_and_pays_its_own_price(server) -> None:
    scripted, url = server
    engine = _engine(url)
    run = _state()
    try:
        nano, mini = _run_jobs(engine, [_job(run, 1, prompt="ONE"),
                                        _job(run, 2, price=MINI, prompt="TWO")])
    finally:
        engine.close()
    assert sorted(body["messages"][0]["content"] for _, body in scripted.received) == ["ONE",
                                                                                      "TWO"]
    # 100 prompt + 10 completion tokens: gpt-5.4-nano at $0.20/$1.25 per million, gpt-4.1-mini
    # at $0.40/$1.60 per million.
    assert nano.cost_usd == pytest.approx((100 * 0.20 + 10 * 1.25) / 1e6)
    assert mini.cost_usd == pytest.approx((100 * 0.40 + 10 * 1.60) / 1e6)
    assert (nano.attempts, nano.result.caption) == (1, "A cat.")


def test_a_server_error_is_retried_and_only_the_answer_is_paid(server) -> None:
    scripted, url = server
    scripted.script = [Reply(500, {"error": {"message": "boom", "type": "server_error"}})]
    engine = _engine(url)
    run = _state(spend_share_usd=1.0)
    try:
        [outcome] = _run_jobs(engine, [_job(run, 1)])
    finally:
        engine.close()
    assert len(scripted.received) == 2 and outcome.attempts == 2
    assert outcome.cost_usd > 0 and run.budget.spent_usd == pytest.approx(outcome.cost_usd)
    assert run.budget.outstanding == 0


def test_the_servers_retry_after_is_waited_out(server) -> None:
    scripted, url = server
    scripted.script = [Reply(429, {"error": {"message": "slow down", "type": "requests"}},
                             {"retry-after-ms": "400"})]
    engine = _engine(url)
    try:
        [outcome] = _run_jobs(engine, [_job(_state(), 1)])
    finally:
        engine.close()
    (first, _), (second, _) = scripted.received
    assert outcome.result is not None and second - first >= 0.4  # never sooner than asked


def test_a_bad_request_is_not_retried(server) -> None:
    scripted, url = server
    scripted.default = Reply(400, {"error": {"message": "bad image", "type": "invalid"}})
    engine = _engine(url)
    try:
        [outcome] = _run_jobs(engine, [_job(_state(), 1)])
    finally:
        engine.close()
    assert len(scripted.received) == 1
    assert outcome.result is None and outcome.error.row_code == "http_400"


def test_a_repeated_auth_failure_stops_the_run_and_nothing_more_is_sent(server) -> None:
    scripted, url = server
    scripted.default = Reply(401, {"error": {"message": "bad key", "type": "auth"}})
    engine = _engine(url, concurrency=1)
    run = _state()
    try:
        outcomes = _run_jobs(engine, [_job(run, n) for n in range(6)])
    finally:
        engine.close()
    assert len(scripted.received) == 3
    assert run.stopped is not None and run.stopped.code == "http_401"
    assert [o.stopped is not None for o in outcomes] == [False] * 3 + [True] * 3


def test_the_spend_share_ends_waiters_instead_of_hanging(server) -> None:
    scripted, url = server
    scripted.default = Reply(delay_s=0.3)
    engine = _engine(url, concurrency=4)
    # A worst case is 100 prompt + 60 answer tokens at nano prices: $95e-6; an answer really
    # costs 100 + 10 tokens: $32.5e-6. With a share of $142.5e-6 one worst case fits; the others
    # wait; once it settles at $32.5e-6 a second fits ($127.5e-6); after two answers ($65e-6
    # spent) no worst case fits and nothing is in flight: the share is spent.
    worst = (100 * 0.20 + 60 * 1.25) / 1e6
    run = _state(spend_share_usd=1.5 * worst, max_cost_usd=1.5 * worst)
    try:
        outcomes = _run_jobs(engine, [_job(run, n) for n in range(5)], timeout=10)
    finally:
        engine.close()
    assert sum(o.result is not None for o in outcomes) == 2
    assert len(scripted.received) == 2
    assert {o.stopped.code for o in outcomes if o.result is None} == {"budget_exceeded"}
    assert run.budget.spent_usd <= 1.5 * worst and run.budget.outstanding == 0


def test_an_interrupt_gives_requests_in_flight_the_grace_period_then_abandons_them(
        server) -> None:
    scripted, url = server
    scripted.default = Reply(delay_s=5.0)
    engine = _engine(url, concurrency=2)
    run = _state(grace_s=0.2)
    try:
        futures = [engine.submit(_job(run, n), lambda o: o) for n in range(4)]
        while len(scripted.received) < 2:
            time.sleep(0.01)
        started = time.monotonic()
        run.stop(interrupt_reason(0.2))
        outcomes = [f.result(10) for f in futures]
        ended = time.monotonic() - started
    finally:
        engine.close()
    assert ended < 5, "the requests were not waited for past the grace period"
    assert [o.abandoned for o in outcomes].count(True) == 2, "the two on the wire"
    assert all(o.stopped.code == "interrupted" and o.result is None for o in outcomes)
    assert len(scripted.received) == 2, "nothing new was sent"


def test_copies_share_one_answer_and_a_redelivery_is_the_same_answer(server) -> None:
    scripted, url = server
    engine = _engine(url)
    run = _state()
    try:
        first, copy = _run_jobs(engine, [_job(run, 1, key="same", uri="/a.jpg"),
                                         _job(run, 2, key="same", uri="/b.jpg")])
        [again] = _run_jobs(engine, [_job(run, 3, key="same", uri="/a.jpg")])
    finally:
        engine.close()
    assert len(scripted.received) == 1
    assert copy.shared_from == "/a.jpg" and copy.cost_usd == first.cost_usd
    assert again.redelivered and again.attempts == first.attempts


def test_our_own_bucket_waits_are_not_reported_as_throttling(server) -> None:
    _, url = server
    # 120 requests per minute = one each 0.5 s: four requests wait 1.5 s in our own buckets.
    engine = _engine(url, rpm=120, concurrency=4)
    try:
        _run_jobs(engine, [_job(_state(), n) for n in range(4)])
        counters, _, _ = engine.metrics.drain()
    finally:
        engine.close()
    assert counters["throttled_ms"] >= 1000, "the buckets paced the requests"
    assert "cumulativeThrottlingSeconds" not in counters, "our own pacing is not the server's"


def test_a_429s_backoff_is_reported_as_throttling(server) -> None:
    scripted, url = server
    scripted.script = [Reply(429, {"error": {"message": "slow down", "type": "requests"}},
                             {"retry-after-ms": "1200"})]
    engine = _engine(url)
    try:
        [outcome] = _run_jobs(engine, [_job(_state(), 1)])
        counters, _, _ = engine.metrics.drain()
    finally:
        engine.close()
    assert outcome.result is not None and counters["rate_limited_429"] == 1
    assert counters["backoff_ms"] >= 1200
    assert counters["cumulativeThrottlingSeconds"] == counters["backoff_ms"] // 1000


def test_closing_waits_for_the_requests_on_the_wire_and_sends_nothing_more(server) -> None:
    # The last DoFn leaving after a failed bundle closes the engine while that bundle's
    # requests are on the wire: they are paid, so their answers must still reach `finish`.
    scripted, url = server
    scripted.default = Reply(delay_s=0.8)
    engine = _engine(url, concurrency=3)
    run = _state()
    finished: list[CaptionOutcome] = []
    futures = [engine.submit(_job(run, n), lambda outcome: finished.append(outcome) or outcome)
               for n in range(5)]
    deadline = time.monotonic() + 10
    while len(scripted.received) < 3:  # three on the wire, two waiting for a slot
        assert time.monotonic() < deadline
        time.sleep(0.01)
    engine.close()
    answered = [o for o in finished if o.result is not None]
    assert len(answered) == 3, "every request on the wire came back and was finished"
    assert len(scripted.received) == 3, "nothing was sent once the engine was closing"
    for future in futures:
        future.result(10)  # the two that waited end too (not sent), none hangs
