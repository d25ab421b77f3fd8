"""How many chat requests per second the simulator serves on one core (it must never be the limit).

Starts the simulator in a subprocess pinned to one CPU (os.sched_setaffinity, where available),
with zero latency and no limits or faults, pins this client process to the other CPUs, and drives
it with aiohttp over keep-alive connections for --seconds with small JPEGs (64x48, each distinct,
so no cache could help). Prints requests/s and checks every answer was a 200 the ledger billed.

    .venv/bin/python bench/simulator_rps.py [--seconds 10] [--concurrency 64] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import sys
import time
from pathlib import Path

import aiohttp
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from beam_caption.simulator import running_simulator_process

MODEL = "gpt-4.1-nano"


def make_bodies(count: int) -> list[bytes]:
    """`count` distinct request bodies, each with a small JPEG as a data URL."""
    bodies = []
    for i in range(count):
        buf = io.BytesIO()
        Image.new("RGB", (64, 48), (i % 256, (i * 7) % 256, (i * 13) % 256)).save(buf, "JPEG")
        url = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
        body = {"model": MODEL, "max_completion_tokens": 60, "messages": [{"role": "user",
                "content": [{"type": "text", "text": "Describe this photo in one sentence."},
                            {"type": "image_url", "image_url": {"url": url, "detail": "low"}}]}]}
        bodies.append(json.dumps(body).encode())
    return bodies


async def drive(url: str, bodies: list[bytes], seconds: float, concurrency: int) -> dict:
    """Send requests from `concurrency` workers for `seconds`; count statuses."""
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Content-Type": "application/json", "Authorization": "Bearer bench"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker(k: int) -> None:
            i = k
            while time.perf_counter() < deadline:
                async with session.post(url, data=bodies[i % len(bodies)]) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
                i += concurrency

        started = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed = time.perf_counter() - started
    total = sum(statuses.values())
    return {"requests": total, "seconds": round(elapsed, 2), "rps": round(total / elapsed, 1),
            "statuses": statuses}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_cpus = {cpus[0]} if cpus else None
    if len(cpus) > 1:
        os.sched_setaffinity(0, set(cpus[1:]))  # the client stays off the server's core
    bodies = make_bodies(1024)
    with running_simulator_process(cpus=server_cpus) as sim:
        result = asyncio.run(drive(f"{sim.base_url}/chat/completions", bodies, args.seconds,
                                   args.concurrency))
        stats = sim.stats()
    result["billed_ok"] = stats["requests"]["by_outcome"]["ok"]
    result["server_cpus"] = sorted(server_cpus or [])
    result["cpus"] = len(cpus)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"simulator: {result['rps']} requests/s on one core "
              f"({result['requests']} requests in {result['seconds']} s, "
              f"concurrency {args.concurrency}, statuses {result['statuses']}, "
              f"client on {max(len(cpus) - 1, 1)} other core(s))")
    ok = result["statuses"].get(200, 0)
    return 0 if ok == result["requests"] == result["billed_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
