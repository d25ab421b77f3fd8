"""The scenarios: what is run, against which simulator settings, and by which systems.

A scenario fixes the corpus, the simulator (latency, RPM cap) and the list of systems, which run
one after another against the same simulator process, with its ledger reset between them. Slow
peers may take only the first `limit` images: their images/s is a rate, so it still compares.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from beam_caption.engine.window import AUTO_MAX  # noqa: E402
from beam_caption.runner.workers import in_process_is_faster  # noqa: E402

SEED, POOL, RUNINF, BC = "seed", "thread-pool", "runinference", "beam-caption"
AIOHTTP_DEFAULT_POOL = 100  # aiohttp.TCPConnector's default limit: the seed script's in-flight
PROBE_LABEL = "beam-caption start-up probe (defaults)"
PROBE_IMAGES = 10
HEADLINE_PHOTOS = 76_000  # the library this project was started for
RPM_WINDOW_S = 6.0  # simulator window for RPM caps: a minute's budget scaled to 6 s (see below)


@dataclass(frozen=True)
class System:
    """One system in a scenario: which program, its extra flags, and how many images it takes."""

    label: str
    kind: str
    args: tuple[str, ...] = ()
    limit: int = 0  # the first N images only (0: all)

    def flag(self, name: str, default: int) -> int:
        """The integer value of `--name N` / `--name=N` in args, else `default`."""
        for i, arg in enumerate(self.args):
            if arg == name and i + 1 < len(self.args):
                return int(self.args[i + 1])
            if arg.startswith(name + "="):
                return int(arg.split("=", 1)[1])
        return default

    def in_flight(self, images: int, size_bytes: int = 0) -> int:
        """Requests this system keeps in flight at most (what bounds its ideal images/s).

        beam-caption's default window (--concurrency auto) grows to what the latency and the
        feed call for, up to AUTO_MAX per process, so its ideal is bounded by the CPU instead;
        a job small enough to run in the launcher's process has one process.
        """
        cores = os.cpu_count() or 1
        if self.kind == BC:
            workers = self.flag("--direct_num_workers", 0) or (
                1 if in_process_is_faster(images, size_bytes, 0) else cores)
            return min(images, (self.flag("--concurrency", 0) or AUTO_MAX) * workers)
        if self.kind == POOL:
            return self.flag("--concurrency", 64)
        if self.kind == RUNINF:
            return cores  # one synchronous request per worker process at a time
        return min(images, AIOHTTP_DEFAULT_POOL)


@dataclass(frozen=True)
class Scenario:
    """One side-by-side comparison; `rpm` is the account's cap per minute (0: none).

    With an RPM cap the simulator's window is RPM_WINDOW_S with the cap scaled to it (rpm * 6 /
    60 requests per 6 s): the same sustained rate as a minute's window, reached within a run of
    a few thousand images instead of after the first minute's burst.
    """

    key: str
    title: str
    corpus: str
    count: int
    latency_ms: float
    systems: tuple[System, ...]
    rpm: int = 0
    bare_cost: bool = False  # time the floor and prepare_image; probe beam-caption's start-up
    headline: bool = False  # project the time for HEADLINE_PHOTOS from this run
    notes: tuple[str, ...] = field(default_factory=tuple)

    def all_systems(self) -> tuple[System, ...]:
        """The systems, plus the start-up probe where CPU per image is judged.

        The probe is beam-caption with defaults on the first PROBE_IMAGES images: its CPU is
        mostly start-up (imports, worker processes), subtracted to get the CPU per image.
        """
        if not self.bare_cost:
            return self.systems
        return (*self.systems, System(PROBE_LABEL, BC, limit=PROBE_IMAGES))

    def simulator_overrides(self) -> dict[str, float]:
        """SimulatorConfig fields for this scenario."""
        overrides: dict[str, float] = {"latency_ms": self.latency_ms}
        if self.rpm:
            overrides["rpm"] = max(1, round(self.rpm * RPM_WINDOW_S / 60))
            overrides["window_seconds"] = RPM_WINDOW_S
        return overrides


RPM_NOTE = ("the simulator enforces the cap over a 6 s sliding window (rpm x 6 / 60 requests); "
            "the seed script has no retries, so its 429s are lost images")
CAMERA_NOTE = ("the seed script uploads whole 12 MP files (~4.6 MB of base64 each), so the "
               "simulator's own JSON parsing and base64 decoding limit it, as a real endpoint's "
               "upload time would")


def _peers(runinference_limit: int, pool: int = 64) -> tuple[System, ...]:
    return (System("seed script (gather, full image)", SEED, ("--max-side", "0")),
            System(f"thread pool ({pool} threads, requests)", POOL, ("--concurrency", str(pool))),
            System("Beam RunInference (RemoteModelHandler)", RUNINF, limit=runinference_limit))


def _seed_vs_bc() -> tuple[System, ...]:
    return (System("seed script (gather, full image)", SEED, ("--max-side", "0")), _bc())


def _bc(tuned: int | None = None, *extra: str) -> System:
    if tuned is None:
        return System("beam-caption (defaults)", BC, extra)
    return System(f"beam-caption (--concurrency {tuned})", BC,
                  ("--concurrency", str(tuned), *extra))


NO_LATENCY_NOTE = ("an endpoint that answers at once: what beam-caption's own CPU per image allows "
                   "on this machine, beside the physical floor's bound; the latency scenarios' "
                   "phase rates over this one's say how much of their latency is hidden")

HEADLINE = Scenario(
    "headline", "Headline: 2,000 phone photos (12 MP JPEG), 6,000 RPM account, 300 ms", "phone",
    2000, 300, (_bc(),), rpm=6000, bare_cost=True, headline=True,
    notes=("the projection for 76,000 photos is this run's start-up plus 76,000 at its phase "
           "rate; the floor's projection is 76,000 x the floor CPU / cores",))

QUICK = (
    HEADLINE,
    Scenario("latency-200ms", "Latency 200 ms, 1,000 small images (640x480)", "small", 1000, 200,
             (*_peers(200), _bc(), _bc(64)), bare_cost=True),
    Scenario("latency-1s", "Latency 1 s, 1,000 small images (640x480)", "small", 1000, 1000,
             (*_peers(40), _bc(), _bc(256)), bare_cost=True),
    Scenario("latency-0", "No latency (the CPU alone), 1,000 small images (640x480)", "small",
             1000, 0, (_bc(),), bare_cost=True, notes=(NO_LATENCY_NOTE,)),
    Scenario("rpm-cap", "RPM cap 3,000/min shared by 2 worker processes, 1,000 small images, "
             "200 ms", "small", 1000, 200,
             (System("seed script (gather, full image)", SEED, ("--max-side", "0")),
              System("thread pool (64 threads, requests)", POOL, ("--concurrency", "64")),
              _bc(None, "--rpm", "3000", "--direct_num_workers=2")), rpm=3000,
             notes=(RPM_NOTE,)),
    Scenario("camera", "Camera photos: 100 x 12 MP JPEG (1 in 10 a 3 MP PNG), 200 ms", "camera",
             100, 200, (*_peers(40), _bc()), bare_cost=True, notes=(CAMERA_NOTE,)),
    Scenario("memory-1600", "Memory: 2,000 photos of 1600x1200, 200 ms", "medium", 2000, 200,
             _seed_vs_bc()),
    Scenario("scale-1k", "Peak RSS at 1,000 images (small), 200 ms", "small", 1000, 200,
             (_bc(64),)),
    Scenario("scale-10k", "Peak RSS at 10,000 images (small), 200 ms", "small", 10000, 200,
             (_bc(64),)),
)

FULL = (
    Scenario("full-latency-200ms", "Latency 200 ms, 10,000 small images", "small", 10000, 200,
             (*_peers(1000), _bc(), _bc(64)), bare_cost=True),
    Scenario("full-latency-1s", "Latency 1 s, 10,000 small images", "small", 10000, 1000,
             (*_peers(200), _bc(), _bc(256)), bare_cost=True),
    Scenario("full-rpm-cap", "RPM cap 6,000/min shared by 2 worker processes, 5,000 small "
             "images, 200 ms", "small", 5000, 200,
             (System("thread pool (64 threads, requests)", POOL, ("--concurrency", "64")),
              _bc(None, "--rpm", "6000", "--direct_num_workers=2")), rpm=6000,
             notes=(RPM_NOTE,)),
    Scenario("scale-100k", "Peak RSS at 100,000 images (small), 200 ms", "small", 100000, 200,
             (_bc(64),)),
    Scenario("full-camera", "Camera photos: 500 x 12 MP (1 in 10 a 3 MP PNG), 200 ms", "camera",
             500, 200, (*_peers(100), _bc()), bare_cost=True, notes=(CAMERA_NOTE,)),
)

SCENARIOS = {s.key: s for s in (*QUICK, *FULL)}
