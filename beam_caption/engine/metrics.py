"""All engine metrics in one collector, with units in their names.

The engine runs on its own event-loop thread, outside any DoFn, where Beam's Metrics API has no
container to record into. So the engine counts into this thread-safe collector, and each DoFn
drains the deltas into Beam counters from its own thread (`flush_to_beam`), which makes them
visible in run-summary.json locally and as job counters on Dataflow.
"""

from __future__ import annotations

import threading
from collections import defaultdict

from apache_beam.metrics import Metrics

NAMESPACE = "beam_caption"

# Counter names used by the engine and DoFns (units in the names).
REQUESTS = "requests"
REQUESTS_OK = "requests_ok"
RETRIES = "retries"
RATE_LIMITED = "rate_limited_429"
THROTTLED_MS = "throttled_ms"  # our own pacing: the local RPM/TPM buckets
BACKOFF_MS = "backoff_ms"  # waits before a retry: 429s, 5xx, timeouts (the server's doing)
GLOBAL_LIMIT_WAIT_MS = "global_limit_wait_ms"  # --rate-limiter: the job-wide limit said wait
TOKENS_IN = "tokens_in"
TOKENS_OUT = "tokens_out"
COST_MICRO_USD = "cost_micro_usd"
DEDUPLICATED = "deduplicated_images"
REDELIVERED = "redelivered_answers"
IMAGES_CAPTIONED = "images_captioned"
IMAGES_FAILED = "images_failed"
IMAGES_PREPARED = "images_prepared"
LATENCY_MS = "request_latency_ms"
RUN_STOPPED = "run_stopped"
IN_FLIGHT = "in_flight"
CONCURRENCY = "concurrency"
# The name Dataflow's autoscaler reads (in any namespace, as Beam's own GCS and BigQuery IOs use
# it): time spent waiting on the provider's limits should not look like work that needs more
# workers. Only waits a limit outside this process imposed count (REPORTED_WAITS): backoffs
# after the server's 429s and errors, and the job-wide --rate-limiter, where more workers would
# only wait too. Our own bucket waits (THROTTLED_MS) never count: they pace one process's static
# share, and reporting them would hold back the scaling that makes the job faster.
THROTTLING_SECONDS = "cumulativeThrottlingSeconds"
REPORTED_WAITS = (BACKOFF_MS, GLOBAL_LIMIT_WAIT_MS)


class MetricsCollector:
    """Thread-safe counters, distributions and gauges, drained as deltas."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, int] = defaultdict(int)
        self._distributions: dict[str, list[int]] = defaultdict(list)
        self._gauges: dict[str, int] = {}
        self._throttled_ms_unreported = 0

    def inc(self, name: str, value: int = 1) -> None:
        """Add `value` to counter `name`."""
        with self._lock:
            self._counters[name] += value

    def observe(self, name: str, value: float) -> None:
        """Record one value of distribution `name` (rounded to an int, as Beam keeps them)."""
        with self._lock:
            self._distributions[name].append(round(value))

    def gauge(self, name: str, value: int) -> None:
        """Set gauge `name`."""
        with self._lock:
            self._gauges[name] = value

    def drain(self) -> tuple[dict[str, int], dict[str, list[int]], dict[str, int]]:
        """Take and reset the counters and distributions; gauges are copied.

        Backoffs and job-wide rate-limit waits (REPORTED_WAITS, never our own bucket waits) are
        also reported as whole seconds under THROTTLING_SECONDS, the remainder carried to the
        next drain.
        """
        with self._lock:
            waited = self._throttled_ms_unreported + sum(
                self._counters.get(name, 0) for name in REPORTED_WAITS)
            seconds, self._throttled_ms_unreported = divmod(waited, 1000)
            if seconds:
                self._counters[THROTTLING_SECONDS] += seconds
            counters, self._counters = dict(self._counters), defaultdict(int)
            dists, self._distributions = dict(self._distributions), defaultdict(list)
            return counters, dists, dict(self._gauges)


def flush_to_beam(collector: MetricsCollector) -> None:
    """Record what `collector` gathered since the last flush as Beam metrics (DoFn thread only)."""
    counters, dists, gauges = collector.drain()
    for name, value in counters.items():
        if value:
            Metrics.counter(NAMESPACE, name).inc(value)
    for name, values in dists.items():
        dist = Metrics.distribution(NAMESPACE, name)
        for value in values:
            dist.update(value)
    for name, value in gauges.items():
        Metrics.gauge(NAMESPACE, name).set(value)
