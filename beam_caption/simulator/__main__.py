"""Child-process entry of running_simulator_process (users start `beam-caption simulate`).

    python -m beam_caption.simulator --config-json '{"rpm": 60}' [--cpus 0]

Prints "SIMULATOR_READY <port>" once listening, then serves until SIGTERM or SIGINT, or (with
--exit-on-stdin-eof) until its stdin closes: then a parent that dies leaves no orphan server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from beam_caption.simulator.runner import READY_PREFIX, serve_until_stopped
from beam_caption.simulator.settings import SimulatorConfig


def _announce(port: int) -> None:
    print(f"{READY_PREFIX}{port}", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Parse the config, pin to the CPUs if asked, serve."""
    parser = argparse.ArgumentParser(prog="python -m beam_caption.simulator")
    parser.add_argument("--config-json", default="{}", help="SimulatorConfig fields as JSON")
    parser.add_argument("--cpus", default="", help="comma-separated CPU ids to pin to")
    parser.add_argument("--exit-on-stdin-eof", action="store_true",
                        help="stop when stdin closes (the parent process went away)")
    args = parser.parse_args(argv)
    if args.cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    config = SimulatorConfig.from_dict(json.loads(args.config_json))
    asyncio.run(serve_until_stopped(config, _announce, stop_on_stdin_eof=args.exit_on_stdin_eof))
    return 0


if __name__ == "__main__":
    sys.exit(main())
