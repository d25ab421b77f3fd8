"""--rate-limiter's parts: the address, what the limiter asks the service (domain, descriptors,
hits), the start-up line, and which waits Dataflow's autoscaler hears about."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from beam_caption.engine import metrics as m
from beam_caption.engine.global_limit import GlobalLimit
from beam_caption.engine.loop import get_loop_thread
from beam_caption.engine.pacing import limits_message
from beam_caption.engine.run_state import RunSettings, RunState
from beam_caption.engine.settings import LimiterAddress, LimitsConfig, limiter_address
from beam_caption.errors import ConfigError
from tests.fixtures.ratelimit_service import RateLimitStandIn, running_ratelimit_service


@pytest.mark.parametrize(("url", "address"), [
    ("envoy://127.0.0.1:8081", LimiterAddress("127.0.0.1", 8081, "beam-caption")),
    ("envoy://localhost:8081/", LimiterAddress("localhost", 8081, "beam-caption")),
    ("envoy://ratelimit.internal:8081/captions",
     LimiterAddress("ratelimit.internal", 8081, "captions")),
    ("envoy://[::1]:8081/d", LimiterAddress("::1", 8081, "d")),
])
def test_the_rate_limiter_address_is_parsed(url: str, address: LimiterAddress) -> None:
    assert limiter_address(url) == address


def test_an_ipv6_target_is_bracketed_for_grpc() -> None:
    assert limiter_address("envoy://[::1]:8081").target == "[::1]:8081"
    assert str(limiter_address("envoy://h:1")) == "envoy://h:1/beam-caption"


@pytest.mark.parametrize("url", ["127.0.0.1:8081", "http://h:8081", "envoy://h",
                                 "envoy://h:port", "envoy://h:1/a/b", "envoy://:8081",
                                 "envoy://h:1/d?x=1"])
def test_a_bad_rate_limiter_address_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="envoy://HOST:PORT"):
        LimitsConfig(rpm=60, rate_limiter=url)


def test_a_rate_limiter_needs_a_limit_to_share() -> None:
    with pytest.raises(ConfigError, match="--rpm or --tpm"):
        LimitsConfig(rate_limiter="envoy://127.0.0.1:8081")


def test_a_global_limit_is_not_divided_among_processes() -> None:
    static = LimitsConfig(rpm=600, tpm=60_000, workers=4)
    shared = LimitsConfig(rpm=600, tpm=60_000, workers=4, rate_limiter="envoy://h:1")
    assert (static.rpm_per_worker, static.tpm_per_worker) == (150, 15_000)
    assert (shared.rpm_per_worker, shared.tpm_per_worker) == (600, 60_000)


def test_the_static_division_says_what_it_assumes() -> None:
    line = limits_message(LimitsConfig(rpm=600, workers=4, workers_source="--workers-hint"))
    assert "150.0 requests/min" in line and "--rpm 600 divided by 4 expected" in line
    assert "from --workers-hint" in line and "at most 4 processes" in line
    assert "from" not in limits_message(LimitsConfig(rpm=600, workers=4)).split("processes")[0]


def test_a_global_limit_says_it_is_global_and_where() -> None:
    line = limits_message(LimitsConfig(rpm=600, tpm=9000, workers=4,
                                       rate_limiter="envoy://127.0.0.1:8081/caps"))
    assert line.startswith("rate limits are global: the account's --rpm 600 and --tpm 9000")
    assert "envoy://127.0.0.1:8081/caps" in line and "divided" in line


@pytest.fixture()
def service() -> Iterator[tuple[RateLimitStandIn, str]]:
    standin = RateLimitStandIn({}, domain="caps")
    with running_ratelimit_service(standin) as address:
        yield standin, address


def _asked(service: tuple[RateLimitStandIn, str], tokens: int, domain: str = "/caps",
           **limits: Any) -> list[tuple[str, Any, int]]:
    standin, address = service
    limit = GlobalLimit(LimitsConfig(rate_limiter=f"envoy://{address}{domain}", **limits),
                        m.MetricsCollector())
    run = RunState(RunSettings(run_id=f"run-{time.monotonic_ns()}"))
    assert get_loop_thread("engine").run(limit.acquire(run, tokens), timeout=10)
    return [(a.domain, a.descriptors, a.hits) for a in standin.asked]


def test_rpm_alone_asks_one_hit_per_request(service) -> None:
    assert _asked(service, 160, rpm=60) == [("caps", ((("limit", "rpm"),),), 1)]


def test_tpm_alone_asks_the_requests_estimated_tokens(service) -> None:
    assert _asked(service, 160, tpm=10_000) == [("caps", ((("limit", "tpm"),),), 160)]


def test_both_ask_a_request_then_its_tokens(service) -> None:
    assert _asked(service, 160, rpm=60, tpm=10_000) == [
        ("caps", ((("limit", "rpm"),),), 1), ("caps", ((("limit", "tpm"),),), 160)]


def test_the_domain_defaults_to_beam_caption(service) -> None:
    assert _asked(service, 160, domain="", rpm=60) == [
        ("beam-caption", ((("limit", "rpm"),),), 1)]


def test_a_request_never_asks_more_tokens_than_the_whole_limit(service) -> None:
    # More than --tpm in one hit could never be allowed: the job would wait forever.
    assert _asked(service, 50_000, tpm=10_000) == [("caps", ((("limit", "tpm"),),), 10_000)]


def test_our_own_bucket_waits_are_not_reported_to_the_autoscaler() -> None:
    collector = m.MetricsCollector()
    collector.inc(m.THROTTLED_MS, 5000)
    counters, _, _ = collector.drain()
    assert counters[m.THROTTLED_MS] == 5000 and m.THROTTLING_SECONDS not in counters
    collector.inc(m.THROTTLED_MS, 5000)
    collector.inc(m.GLOBAL_LIMIT_WAIT_MS, 1500)  # the shared account limit: more workers wait too
    counters, _, _ = collector.drain()
    assert counters[m.THROTTLING_SECONDS] == 1

