"""--rate-limiter against a stand-in of Envoy's rate-limit service on loopback: engines that
stand in for worker processes share one limit; a stop ends a job waiting for it; a dead service
stops the run with one clear reason; and the real pipeline keeps the simulator's limit."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apache_beam.io.components import rate_limiter as beam_rate_limiter

from beam_caption.cost.pricing import load_prices
from beam_caption.engine.engine import AsyncEngine
from beam_caption.engine.jobs import CaptionJob, CaptionOutcome
from beam_caption.engine.loop import get_loop_thread
from beam_caption.engine.run_state import RunSettings, RunState
from beam_caption.engine.settings import EndpointConfig, LimitsConfig
from beam_caption.engine.stop import interrupt_reason
from beam_caption.simulator import running_simulator
from tests.fixtures.photos import make_small_photos
from tests.fixtures.ratelimit_service import (
    RateLimitStandIn,
    running_ratelimit_service,
    unused_port,
)
from tests.integration.pipeline_helpers import IN_MEMORY, read_rows, read_summary, run_cli
from tests.integration.scripted_server import ScriptedServer, serving

NANO = load_prices()["gpt-5.4-nano"]


@pytest.fixture()
def server() -> Iterator[tuple[ScriptedServer, str]]:
    scripted = ScriptedServer()
    with serving(scripted) as url:
        yield scripted, url


@pytest.fixture()
def fast_beam_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    # Beam retries an unreachable service 5 times, 10 s apart; the behaviour after is the same.
    monkeypatch.setattr(beam_rate_limiter, "_RPC_RETRY_DELAY_SECONDS", 0.01)


def _engines(url: str, count: int, **limits: Any) -> list[AsyncEngine]:
    engines = []
    for _ in range(count):
        engine = AsyncEngine(EndpointConfig(base_url=url, request_timeout_s=10),
                             LimitsConfig(backoff_base_s=0.01, **limits),
                             get_loop_thread("engine"), api_key="sk-test-global")
        engine.open()
        engines.append(engine)
    return engines


def _job(run: RunState, n: int) -> CaptionJob:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "Describe."}],
                       "n": n}).encode()
    return CaptionJob(key=f"key-{n}", uri=f"/p/{n}.jpg", body=body, estimated_prompt_tokens=100,
                      max_output_tokens=60, price=NANO, run=run)


def _state(**settings: Any) -> RunState:
    return RunState(RunSettings(run_id=f"run-{time.monotonic_ns()}", **settings))


def _run_everywhere(engines: list[AsyncEngine], jobs_each: int) -> list[CaptionOutcome]:
    """`jobs_each` jobs on every engine at once, each engine with its own run (as processes)."""
    try:
        futures = []
        for engine in engines:
            run = _state()
            futures += [engine.submit(_job(run, n), lambda o: o) for n in range(jobs_each)]
        return [f.result(60) for f in futures]
    finally:
        for engine in engines:
            engine.close()


def test_engines_sharing_one_global_limit_stay_under_it_per_window(server) -> None:
    scripted, url = server
    standin = RateLimitStandIn({"rpm": 6}, window_s=1.0)
    with running_ratelimit_service(standin) as address:
        # Three processes, each told it is alone (workers=1): the service keeps the sum.
        engines = _engines(url, 3, rpm=360, concurrency=4, rate_limiter=f"envoy://{address}")
        outcomes = _run_everywhere(engines, 8)
    assert all(o.result is not None for o in outcomes)
    granted = standin.allowed("rpm")
    assert max(standin.allowed_per_window("rpm").values()) <= 6
    # Every request sent had a permit of its own, granted before it arrived.
    arrivals = sorted(t for t, _ in scripted.received)
    assert len(arrivals) == len(granted) == 24
    assert all(a >= g for a, g in zip(arrivals, sorted(g.at for g in granted), strict=True))


def test_a_static_division_with_a_wrong_worker_count_exceeds_the_limit(server) -> None:
    scripted, url = server
    standin = RateLimitStandIn({"rpm": 6}, window_s=1.0)  # only its windows are used here
    # The same three processes dividing --rpm by 1: each sends the whole limit.
    _run_everywhere(_engines(url, 3, rpm=360, concurrency=4, workers=1), 8)
    per_window = Counter(standin.window_of(t) for t, _ in scripted.received)
    assert len(scripted.received) == 24 and max(per_window.values()) > 6


def test_a_stop_ends_a_job_waiting_for_the_global_limit_as_not_sent(server) -> None:
    scripted, url = server
    standin = RateLimitStandIn({"rpm": 1}, window_s=60.0)
    with running_ratelimit_service(standin) as address:
        [engine] = _engines(url, 1, rpm=6000, concurrency=4, rate_limiter=f"envoy://{address}")
        run = _state(grace_s=5.0)
        try:
            futures = [engine.submit(_job(run, n), lambda o: o) for n in range(3)]
            while sum(not a.allowed for a in standin.asked) < 2:  # the others wait in Beam
                time.sleep(0.01)
            stopped_at = time.monotonic()
            run.stop(interrupt_reason(5.0))
            outcomes = [f.result(60) for f in futures]
            ended = time.monotonic() - stopped_at
        finally:
            engine.close()
    waiting = [o for o in outcomes if o.result is None]
    assert len(waiting) >= 2 and ended < 5.0, "the waiting jobs ended within the grace"
    assert all(o.stopped.code == "interrupted" and not o.abandoned and o.attempts == 0
               for o in waiting), "not sent"
    assert len(scripted.received) == len(standin.allowed("rpm")), "nothing sent without a permit"


def test_an_unreachable_service_stops_the_run_with_one_clear_reason(
        server, fast_beam_retries) -> None:
    scripted, url = server
    target = f"envoy://127.0.0.1:{unused_port()}"
    [engine] = _engines(url, 1, rpm=60, concurrency=2, rate_limiter=target)
    run = _state()
    try:
        outcomes = [f.result(60) for f in
                    [engine.submit(_job(run, n), lambda o: o) for n in range(4)]]
        counters, _, _ = engine.metrics.drain()
    finally:
        engine.close()
    assert scripted.received == [], "nothing was sent without the job-wide limit"
    assert run.stopped.code == "rate_limiter_unavailable" and counters["run_stopped"] == 1
    assert f"{target}/beam-caption did not answer" in run.stopped.message
    assert "--resume" in run.stopped.message
    assert {o.stopped.code for o in outcomes} == {"rate_limiter_unavailable"}


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    make_small_photos(folder, 20)
    return folder


def test_the_pipeline_keeps_the_global_limit_and_the_simulator_sees_no_429(
        photos: Path, tmp_path: Path) -> None:
    standin = RateLimitStandIn({"rpm": 4}, window_s=1.0)
    # The simulator allows 50 requests per sliding 10 s; the stand-in's 4 per 1 s window allow
    # at most 44 in any 10 s. --rpm 600 alone (10 a second) would overrun the simulator: only
    # the service's limit keeps it.
    with running_simulator(rpm=50, window_seconds=10) as sim, \
            running_ratelimit_service(standin) as address:
        out = tmp_path / "out"
        code = run_cli("run", "--input", str(photos / "*.jpg"), "--output", str(out),
                       "--base-url", sim.base_url, "--rpm", "600", "--concurrency", "8",
                       "--rate-limiter", f"envoy://{address}", *IN_MEMORY)
        stats = sim.stats()
    assert code == 0
    rows = read_rows(out, "captions")
    assert sorted(Path(r["uri"]).name for r in rows) == sorted(p.name for p in photos.iterdir())
    assert read_rows(out, "errors") == []
    assert stats["requests"]["by_outcome"].get("rate_limited", 0) == 0
    assert stats["requests"]["total"] == len(standin.allowed("rpm")) == 20
    assert max(standin.allowed_per_window("rpm").values()) <= 4
    assert read_summary(out)["engine"]["global_limit_wait_ms"] > 0


def test_the_pipeline_stops_early_when_the_service_is_unreachable(
        photos: Path, tmp_path: Path, capsys, fast_beam_retries) -> None:
    target = f"envoy://127.0.0.1:{unused_port()}/captions"
    with running_simulator() as sim:
        out = tmp_path / "out"
        code = run_cli("run", "--input", str(photos / "*.jpg"), "--output", str(out),
                       "--base-url", sim.base_url, "--rpm", "600", "--rate-limiter", target,
                       *IN_MEMORY)
        stats = sim.stats()
    assert code == 1 and stats["requests"]["total"] == 0
    errors = read_rows(out, "errors")
    assert len(errors) == 20 and {e["code"] for e in errors} == {"rate_limiter_unavailable"}
    assert f"stopped early: the rate-limit service --rate-limiter {target} did not answer" \
        in capsys.readouterr().out


@pytest.mark.parametrize(("flags", "message"), [
    (["--rpm", "60", "--rate-limiter", "http://127.0.0.1:8081"], "is not envoy://HOST:PORT"),
    (["--rate-limiter", "envoy://127.0.0.1:8081"], "give --rpm or --tpm too")])
def test_a_bad_rate_limiter_flag_fails_in_the_launcher(photos: Path, tmp_path: Path, capsys,
                                                       flags: list[str], message: str) -> None:
    code = run_cli("run", "--input", str(photos / "*.jpg"), "--output", str(tmp_path / "out"),
                   "--simulate", *flags, *IN_MEMORY)
    assert code == 2 and message in capsys.readouterr().err
