"""Benchmarks of beam-caption against the systems users would pick instead, side by side.

    .venv/bin/python bench/run.py --quick        # make bench: every quick scenario (~10 min)
    .venv/bin/python bench/run.py --full         # make bench-full: the large scenarios
    .venv/bin/python bench/run.py --only camera  # one scenario by key (see bench/scenarios.py)

For each scenario: build (or reuse) the corpus under bench/corpus/, start the simulator in its own
process with the scenario's latency and RPM cap, then run each system as a child process, one
after another, resetting the simulator's ledger between them. Each run is measured (wall, CPU of
the process tree, peak RSS of the tree, the simulator's ledger and request log), the figures are
merged into bench/results.json and bench/RESULTS.md is rendered from all stored figures.
Nothing leaves 127.0.0.1: the simulator listens on loopback and every system is pointed at it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from beam_caption.simulator import running_simulator_process  # noqa: E402
from bench import floor, report  # noqa: E402
from bench.corpus import corpus, read_list  # noqa: E402
from bench.measure import run_measured  # noqa: E402
from bench.scenarios import BC, FULL, PROBE_LABEL, QUICK, SCENARIOS, Scenario, System  # noqa: E402
from bench.simlog import LogReader, process_cpu_s, simulator_process  # noqa: E402

OUT = ROOT / "bench" / "out"
RESULTS_JSON = ROOT / "bench" / "results.json"
RESULTS_MD = ROOT / "bench" / "RESULTS.md"
PEER_SCRIPTS = {"seed": "seed_gather.py", "thread-pool": "thread_pool.py",
                "runinference": "runinference.py"}
BARE_COST_SAMPLE = 200  # images timed for the bare prepare cost (a sample suffices)


def system_command(system: System, listing: Path, base_url: str, out: Path) -> list[str]:
    """The exact command line that runs `system` on the images of `listing`."""
    venv_bin = Path(sys.executable).parent
    if system.kind == BC:
        return [str(venv_bin / "beam-caption"), "run", "--manifest", str(listing),
                "--output", str(out), "--overwrite", "--base-url", base_url, *system.args]
    return [sys.executable, str(ROOT / "bench" / "peers" / PEER_SCRIPTS[system.kind]),
            "--list", str(listing), "--base-url", base_url, "--output", str(out), *system.args]


def first_images(listing: Path, limit: int) -> Path:
    """A list file of the first `limit` images of `listing` (slow peers, the start-up probe)."""
    if not limit:
        return listing
    head = listing.with_name(f"{listing.stem}-first{limit}.txt")
    head.write_text("".join(f"{p}\n" for p in read_list(listing)[:limit]))
    return head


def shown_command(cmd: list[str], base_url: str) -> str:
    """`cmd` as RESULTS.md shows it: repo-relative paths, $SIM for the simulator's URL."""
    text = " ".join(cmd).replace(base_url, "$SIM").replace(str(ROOT) + "/", "")
    return text.replace(sys.executable, ".venv/bin/python")


def system_env() -> dict[str, str]:
    """The children's environment: no GCE probe, no proxies, no real API key or base URL."""
    env = {k: v for k, v in os.environ.items()
           if not k.upper().startswith(("OPENAI_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"))}
    env.update(NO_GCE_CHECK="true", PYTHONUNBUFFERED="1", NO_PROXY="127.0.0.1,localhost")
    return env


def answers_of(system: System, out: Path) -> tuple[int, int]:
    """(images captioned, images failed) as the system itself reports them."""
    if system.kind == BC:
        summary = json.loads((out / "run-summary.json").read_text())
        return summary["captions"], summary["errors"]
    result = json.loads((out / "result.json").read_text())
    return result["ok"], result["failed"]


def run_system(scenario: Scenario, system: System, listing: Path, sim: Any,
               log: LogReader, sim_pid: int | None) -> dict[str, Any]:
    """Run one system against the running simulator; return its row of figures."""
    out = OUT / scenario.key / system.label.split(" (")[0].replace(" ", "-") / _slug(system)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    images = min(system.limit or scenario.count, scenario.count)
    cmd = system_command(system, first_images(listing, system.limit), sim.base_url, out)
    sim.reset()
    log.skip_to_end()
    sim_cpu = process_cpu_s(sim_pid)
    print(f"  {system.label}: {images} images ...", flush=True)
    load_before = os.getloadavg()[0]
    size_bytes = sum(p.stat().st_size for p in read_list(listing)[:images])
    in_flight = system.in_flight(images, size_bytes)
    launched = time.time()
    measured = run_measured(cmd, out.parent / f"{_slug(system)}.log", env=system_env())
    stats = sim.stats()
    phase = log.phase()
    row: dict[str, Any] = {
        "system": system.label, "kind": system.kind, "images": images,
        "probe": system.label == PROBE_LABEL,
        "command": shown_command(cmd, sim.base_url), "returncode": measured.returncode,
        "wall_s": measured.wall_s, "cpu_s": measured.cpu_s, "peak_rss_mb": measured.peak_rss_mb,
        "sim_cpu_s": process_cpu_s(sim_pid) - sim_cpu,
        # Other work on this shared machine shows here (1-minute load average before / after).
        "load": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "requests": stats["requests"]["total"],
        "rate_limited": stats["requests"]["by_outcome"]["rate_limited"],
        "billed": stats["requests"]["by_outcome"]["ok"],
        "cost_usd": stats["cost_usd"]["total"],
        "phase_s": phase.seconds, "phase_ok": phase.ok,
        # From the command's start to the first request's arrival at the simulator.
        "first_request_s": round(phase.first - launched, 3) if phase.first else None,
        "in_flight": in_flight,
        "ideal_ips": floor.ideal_images_per_s(in_flight, scenario.latency_ms, scenario.rpm),
    }
    try:
        row["ok"], row["failed"] = answers_of(system, out)
    except (OSError, KeyError, ValueError):
        row["ok"], row["failed"] = 0, images  # the system crashed: its log says why
    print(f"    {report.one_line(row)}", flush=True)
    return row


def _slug(system: System) -> str:
    parts = [system.kind, *[a.strip("-").replace("=", "") for a in system.args]]
    return "-".join(parts + ([f"first{system.limit}"] if system.limit else []))


def run_scenario(scenario: Scenario) -> dict[str, Any]:
    """Every system of `scenario` against one simulator process; the scenario's record."""
    print(f"[{scenario.key}] {scenario.title}", flush=True)
    started = time.monotonic()
    listing = corpus(scenario.corpus, scenario.count)
    record: dict[str, Any] = {"key": scenario.key, "title": scenario.title,
                              "latency_ms": scenario.latency_ms, "rpm": scenario.rpm,
                              "count": scenario.count, "corpus": scenario.corpus,
                              "headline": scenario.headline,
                              "simulator": scenario.simulator_overrides(),
                              "date": time.strftime("%Y-%m-%d %H:%M %Z"),
                              "nproc": os.cpu_count(),
                              "notes": list(scenario.notes)}
    sample = read_list(listing)[:BARE_COST_SAMPLE] if scenario.bare_cost else []
    bare = [floor.bare_prepare_cost(sample)] if sample else []
    floors = [floor.floor_cost(sample)] if sample else []
    log_path = OUT / scenario.key / "simulator.jsonl"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.unlink(missing_ok=True)
    overrides = {**scenario.simulator_overrides(), "log_path": str(log_path)}
    with running_simulator_process(**overrides) as sim:
        sim_pid = simulator_process()
        log = LogReader(log_path)
        record["rows"] = [run_system(scenario, s, listing, sim, log, sim_pid)
                          for s in scenario.all_systems()]
    if sample:
        # Timed again after the systems: CPU time per operation drifts with the load on this
        # shared machine (a busy SMT sibling slows a core), so the two are averaged.
        bare.append(floor.bare_prepare_cost(sample))
        floors.append(floor.floor_cost(sample))
        record.update(bare_cpu_s_per_image=sum(bare) / len(bare), bare_cpu_s_runs=bare,
                      floor_cpu_s_per_image=sum(floors) / len(floors), floor_cpu_s_runs=floors,
                      bare_sample=len(sample))
    record["seconds"] = round(time.monotonic() - started, 1)
    return record


def load_results() -> dict[str, Any]:
    """bench/results.json: every scenario's latest record, by key."""
    if RESULTS_JSON.exists():
        return json.loads(RESULTS_JSON.read_text())
    return {"scenarios": {}}


def main(argv: list[str] | None = None) -> int:
    """Run the chosen scenarios, store their figures, render RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true", help="the quick scenarios (make bench)")
    mode.add_argument("--full", action="store_true", help="the large scenarios (make bench-full)")
    mode.add_argument("--only", help="comma-separated scenario keys")
    mode.add_argument("--render", action="store_true", help="only re-render RESULTS.md")
    args = parser.parse_args(argv)
    os.environ["NO_GCE_CHECK"] = "true"
    if args.only:
        unknown = [k for k in args.only.split(",") if k not in SCENARIOS]
        if unknown:
            parser.error(f"unknown scenario(s): {', '.join(unknown)}; "
                         f"known: {', '.join(SCENARIOS)}")
        chosen = [SCENARIOS[k] for k in args.only.split(",")]
    else:
        chosen = [] if args.render else list(QUICK if args.quick else FULL)
    results = load_results()
    started = time.monotonic()
    for scenario in chosen:
        record = run_scenario(scenario)
        record["invocation"] = "make bench-full" if args.full else (
            "make bench" if args.quick else f"bench/run.py --only {args.only}")
        results["scenarios"][scenario.key] = record
        results["machine"] = report.machine()
        RESULTS_JSON.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    if chosen:
        print(f"done in {time.monotonic() - started:.0f} s", flush=True)
    RESULTS_MD.write_text(report.render(results, order=list(SCENARIOS)))
    print(f"wrote {RESULTS_MD.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
