"""The simulator in a child process (for benchmarks) and as `beam-caption simulate`."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from beam_caption.errors import ConfigError
from beam_caption.simulator import SimulatorConfig, running_simulator, running_simulator_process
from tests.integration.simclient import chat, chat_body

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_running_simulator_process_serves_and_controls() -> None:
    with running_simulator_process(SimulatorConfig(rpm=1000), api_key="k") as sim:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", sim.base_url)
        assert chat(sim.base_url, chat_body(), key="k").status == 200
        sim.update(api_key="other")
        assert chat(sim.base_url, chat_body(), key="k").status == 401
        outcomes = sim.stats()["requests"]["by_outcome"]
        assert {k: v for k, v in outcomes.items() if v} == {"ok": 1, "unauthorized": 1}
        sim.reset()
        assert sim.stats()["requests"]["total"] == 0


def test_cli_prints_the_base_url_and_stops_on_ctrl_c() -> None:
    env = dict(os.environ, NO_GCE_CHECK="true", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.Popen([sys.executable, "-m", "beam_caption", "simulate", "--port", "0",
                             "--api-key", "sk-cli", "--rpm", "100"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/v1)", line)
        assert match, line
        reply = chat(match.group(1), chat_body(), key="sk-cli")
        assert reply.status == 200
        assert reply.headers["x-ratelimit-limit-requests"] == "100"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_help_documents_every_option_with_an_example() -> None:
    from beam_caption.cli import simulate as cli

    parser = argparse.ArgumentParser(epilog=cli.EPILOG)
    cli.add_arguments(parser)
    flags = [a for a in parser._actions if a.dest != "help"]
    assert len(flags) == len(dataclasses.fields(SimulatorConfig))  # every config field
    for action in flags:
        assert action.help and "e.g." in action.help, action.option_strings
    config = cli.config_from_args(parser.parse_args(["--rate-500", "0.25", "--model", "a",
                                                     "--model", "b", "--log", "x.jsonl"]))
    assert (config.rate_500, config.models, config.log_path) == (0.25, ("a", "b"), "x.jsonl")
    assert cli.EPILOG.count("beam-caption simulate") >= 3


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ConfigError, match="add up to more than 1"):
        SimulatorConfig(rate_500=0.6, rate_503=0.6)
    with pytest.raises(ConfigError, match="unknown simulator option"):
        SimulatorConfig().replace(rate_teapot=1.0)
    with pytest.raises(ConfigError, match="loopback only"), running_simulator(host="0.0.0.0"):
        pass
    with running_simulator() as sim:
        started = time.monotonic()
        from tests.integration.simclient import post_json

        reply = post_json(sim.root_url, "/_sim/config", {"port": 1})
        assert reply.status == 400 and "cannot change at runtime" in reply.error["message"]
        assert time.monotonic() - started < 5
