"""Starting and stopping the simulator: in a background thread, in a subprocess, or in the CLI.

    with running_simulator(rpm=60, api_key="k") as sim:       # tests
        client = OpenAI(base_url=sim.base_url, api_key="k")
        ...
        assert sim.stats()["requests"]["by_outcome"]["ok"] == 3

running_simulator_process() runs the same server in a child process, so a benchmark's client
does not share the GIL with the server; it yields the same handle type. serve_until_stopped() is
the foreground loop of that child (python -m beam_caption.simulator) and of `beam-caption
simulate`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from beam_caption.engine.loop import LoopThread
from beam_caption.errors import ConfigError
from beam_caption.loopback import is_loopback_host
from beam_caption.simulator.app import build_app
from beam_caption.simulator.settings import SimulatorConfig

READY_PREFIX = "SIMULATOR_READY "
# Hung "timeout" handlers must not delay shutdown: give in-flight requests this long.
SHUTDOWN_TIMEOUT_S = 0.5
# Loopback only: never consult *_proxy environment variables for the control calls.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class SimulatorHandle:
    """A running simulator: its URLs and the /_sim/ control calls."""

    host: str
    port: int

    @property
    def root_url(self) -> str:
        """http://HOST:PORT (no /v1)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What an OpenAI client takes as base URL: http://HOST:PORT/v1."""
        return f"{self.root_url}/v1"

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.root_url}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with _OPENER.open(req, timeout=10) as resp:
            return json.loads(resp.read())

    def stats(self) -> dict[str, Any]:
        """GET /_sim/stats: requests by outcome, tokens, dollars, successes per image."""
        return self._call("GET", "/_sim/stats")

    def reset(self) -> None:
        """POST /_sim/reset: zero the ledger."""
        self._call("POST", "/_sim/reset", {})

    def update(self, **changes: Any) -> dict[str, Any]:
        """POST /_sim/config: change fault rates, api_key, rpm/tpm, latency... at runtime."""
        return self._call("POST", "/_sim/config", changes)


async def start_server(config: SimulatorConfig) -> tuple[web.AppRunner, int]:
    """Start the app on config.host:config.port (0 = a free port); returns (runner, port)."""
    runner = web.AppRunner(build_app(config), access_log=None, handler_cancellation=True,
                           shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc.strerror}") \
            from None
    return runner, int(runner.addresses[0][1])


async def serve_until_stopped(config: SimulatorConfig, announce: Callable[[int], object], *,
                              stop_on_stdin_eof: bool = False) -> None:
    """Serve `config` in the foreground until SIGTERM or SIGINT, then stop cleanly.

    `announce(port)` runs once the server listens (and the signals are handled). With
    `stop_on_stdin_eof` the server also stops when its stdin closes, so a parent process that
    dies leaves no orphan server. Call from the main thread (signal handlers live there).
    """
    runner, port = await start_server(config)
    try:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if stop_on_stdin_eof:
            threading.Thread(target=_wait_for_stdin_eof, args=(loop, stop), daemon=True).start()
        announce(port)
        await stop.wait()
    finally:
        await runner.cleanup()


def _wait_for_stdin_eof(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    # Raw reads (no buffered-reader lock to trip over at interpreter exit); b"" is EOF, which
    # comes when the parent closes the pipe or dies.
    while os.read(0, 4096):
        pass
    loop.call_soon_threadsafe(stop.set)


def _config(config: SimulatorConfig | None, overrides: dict[str, Any]) -> SimulatorConfig:
    cfg = (config or SimulatorConfig()).replace(**overrides)
    if not is_loopback_host(cfg.host):
        raise ConfigError("running_simulator listens on loopback only; use the CLI's --host "
                          "to serve other interfaces")
    return cfg


@contextlib.contextmanager
def running_simulator(config: SimulatorConfig | None = None,
                      **overrides: Any) -> Iterator[SimulatorHandle]:
    """Run the simulator on its own event loop in a background thread; stop it on exit."""
    cfg = _config(config, overrides)
    thread = LoopThread("simulator")
    try:
        runner, port = thread.run(start_server(cfg), timeout=30)
        try:
            yield SimulatorHandle(cfg.host, port)
        finally:
            thread.run(runner.cleanup(), timeout=30)
    finally:
        thread.stop()
        if not thread.is_alive():
            thread.loop.close()  # release the selector and its file descriptors


@contextlib.contextmanager
def running_simulator_process(config: SimulatorConfig | None = None, *,
                              cpus: set[int] | None = None,
                              **overrides: Any) -> Iterator[SimulatorHandle]:
    """Run the simulator in a child process (pinned to `cpus` if given); stop it on exit."""
    cfg = _config(config, overrides)
    cmd = [sys.executable, "-m", "beam_caption.simulator", "--exit-on-stdin-eof",
           "--config-json", json.dumps(cfg.to_dict())]
    if cpus:
        cmd += ["--cpus", ",".join(map(str, sorted(cpus)))]
    # The child must import this very beam_caption, installed or not.
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, NO_GCE_CHECK="true", PYTHONUNBUFFERED="1", PYTHONPATH=path)
    # stdin stays open while we live: if this process dies, the child sees EOF and exits.
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=env)
    try:
        port = _wait_ready(proc)
        yield SimulatorHandle(cfg.host, port)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


def _wait_ready(proc: subprocess.Popen[str]) -> int:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(READY_PREFIX):
            return int(line[len(READY_PREFIX):].strip())
    raise RuntimeError(f"the simulator process exited before it was ready (code {proc.wait()})")
