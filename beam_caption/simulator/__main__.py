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
import signal
import sys
import threading

from beam_caption.simulator.runner import READY_PREFIX, start_server
from beam_caption.simulator.settings import SimulatorConfig


async def _serve(config: SimulatorConfig, watch_stdin: bool) -> None:
    runner, port = await start_server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if watch_stdin:
        def wait_for_eof() -> None:
            # Raw reads (no buffered-reader lock to trip over at interpreter exit); b"" is EOF,
            # which comes when the parent closes the pipe or dies.
            while os.read(0, 4096):
                pass
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=wait_for_eof, daemon=True).start()
    print(f"{READY_PREFIX}{port}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


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
    asyncio.run(_serve(config, args.exit_on_stdin_eof))
    return 0


if __name__ == "__main__":
    sys.exit(main())
