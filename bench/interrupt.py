"""Interrupt one run and resume it: how many answers were received, and how many paid twice.

    .venv/bin/python bench/interrupt.py --signal INT --at 0.6     # Ctrl-C to the process group
    .venv/bin/python bench/interrupt.py --signal KILL --at 0.6    # kill -9 of the process group

400 distinct 640x480 photos, a simulator answering in about 400 ms, --concurrency 16 and two
local worker processes (issue 13's set-up). The interrupt comes when `--at` of the images have
been answered; the figures come from the simulator's ledger.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from beam_caption.simulator import running_simulator_process  # noqa: E402
from tests.fixtures.photos import make_small_photos  # noqa: E402


def _rows(folder: Path, table: str) -> list[dict]:
    return [row for path in folder.glob(f"{table}-*.parquet") for row in pq.read_table(path)
            .to_pylist()]


def main() -> None:
    """Run, interrupt, resume, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signal", choices=("INT", "KILL", "TERM"), default="INT")
    parser.add_argument("--at", type=float, default=0.6, help="fraction answered (default 0.6)")
    parser.add_argument("--images", type=int, default=400)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bc-interrupt-"))
    photos, out = work / "photos", work / "out"
    make_small_photos(photos, args.images, size=(640, 480))
    env = dict(os.environ, NO_GCE_CHECK="true", PYTHONPATH=str(ROOT))
    with running_simulator_process(latency_ms=400) as sim:
        command = [sys.executable, "-m", "beam_caption", "run", "--input", str(photos / "*.jpg"),
                   "--output", str(out), "--base-url", sim.base_url, "--concurrency", "16",
                   "--direct_num_workers=2"]
        proc = subprocess.Popen(command, env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while (answered := sum(sim.stats()["successes_by_image"].values())) < args.at * args.images:
            time.sleep(0.05)
        os.killpg(proc.pid, getattr(signal, f"SIG{args.signal}"))
        started = time.monotonic()
        proc.wait(120)
        ended = time.monotonic() - started
        paid_first = sum(sim.stats()["successes_by_image"].values())
        resumed = subprocess.run([*command, "--resume"], env=env, capture_output=True, text=True)
        ledger = sim.stats()["successes_by_image"]
    rows = _rows(out, "captions")
    per_uri = collections.Counter(row["uri"] for row in rows)
    print(f"signal {args.signal} at {answered} answers received; the launcher ended "
          f"{ended:.1f} s later with exit code {proc.returncode}")
    print(f"answers paid by the interrupted run: {paid_first}")
    print(f"resume exit code {resumed.returncode}; paid again: "
          f"{sum(count - 1 for count in ledger.values())}; images answered: {len(ledger)}")
    print(f"caption rows {len(rows)}, images with more than one row: "
          f"{sum(1 for n in per_uri.values() if n > 1)}, error rows {len(_rows(out, 'errors'))}")


if __name__ == "__main__":
    main()
