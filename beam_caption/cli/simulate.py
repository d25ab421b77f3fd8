"""`beam-caption simulate`: run the local OpenAI-compatible simulator until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging

from beam_caption.loopback import is_loopback_host
from beam_caption.simulator.runner import SimulatorHandle, serve_until_stopped
from beam_caption.simulator.settings import SimulatorConfig

DESCRIPTION = """Run a local OpenAI-compatible server (chat completions with images, Files and
Batch API) for the demo, tests and benchmarks. It enforces the real API's request rules, bills
usage by the published token rules at the project's prices, and can add latency, rate limits and
seeded faults. Captions are synthetic (brightness, orientation, colours and size of each image).
Point any OpenAI client at the printed base URL; GET /_sim/stats shows the ledger."""

EPILOG = """examples:
  beam-caption simulate --port 8080
  beam-caption simulate --port 8080 --api-key sk-local --latency-ms 400 --max-concurrency 32
  beam-caption simulate --rpm 500 --tpm 200000 --rate-429 0.02 --rate-500 0.01 --seed 7
  beam-caption simulate --rate-timeout 0.01 --hang-seconds 120 --log /tmp/sim.jsonl
  beam-caption simulate --model my-local-vlm --prices my-prices.json --batch-seconds 30
  curl -s localhost:8080/_sim/stats"""

log = logging.getLogger(__name__)

# (flag, config field, type, help) for the plain numeric and string options.
_OPTIONS: tuple[tuple[str, str, type, str], ...] = (
    ("--latency-ms", "latency_ms", float,
     "median answer latency in ms, log-normal spread (e.g. --latency-ms 400)"),
    ("--latency-sigma", "latency_sigma", float,
     "sigma of ln(latency) (e.g. --latency-sigma 0.5 for a long tail)"),
    ("--per-output-token-ms", "per_output_token_ms", float,
     "extra ms per completion token (e.g. --per-output-token-ms 8)"),
    ("--max-concurrency", "max_concurrency", int,
     "requests served at once; the rest queue; 0 = unbounded (e.g. --max-concurrency 64)"),
    ("--rpm", "rpm", int, "requests per minute before 429s; 0 = unlimited (e.g. --rpm 500)"),
    ("--tpm", "tpm", int, "tokens per minute before 429s; 0 = unlimited (e.g. --tpm 200000)"),
    ("--window-seconds", "window_seconds", float,
     "length of the sliding rate-limit window (e.g. --window-seconds 10 to test fast)"),
    ("--rate-429", "rate_429", float,
     "share of requests answered 429 rate_limit_exceeded, retryable (e.g. --rate-429 0.05)"),
    ("--rate-500", "rate_500", float, "share answered 500 server_error (e.g. --rate-500 0.01)"),
    ("--rate-503", "rate_503", float, "share answered 503 overloaded (e.g. --rate-503 0.01)"),
    ("--rate-timeout", "rate_timeout", float,
     "share that hang --hang-seconds, then drop the connection (e.g. --rate-timeout 0.01)"),
    ("--rate-disconnect", "rate_disconnect", float,
     "share whose connection is closed with no answer (e.g. --rate-disconnect 0.01)"),
    ("--rate-broken-json", "rate_broken_json", float,
     "share answered 200 with a truncated JSON body (e.g. --rate-broken-json 0.01)"),
    ("--rate-quota", "rate_quota", float,
     "share answered 429 insufficient_quota, not retryable (e.g. --rate-quota 0.001)"),
    ("--rate-content-filter", "rate_content_filter", float,
     "share answered with finish_reason content_filter (e.g. --rate-content-filter 0.01)"),
    ("--hang-seconds", "hang_seconds", float,
     "how long a timeout fault hangs (e.g. --hang-seconds 120)"),
    ("--seed", "seed", int, "seed of the fault and latency draws (e.g. --seed 7)"),
    ("--batch-seconds", "batch_seconds", float,
     "time from batch creation to completed (e.g. --batch-seconds 30)"),
    ("--batch-max-lines", "batch_max_lines", int,
     "most requests per batch input file (e.g. --batch-max-lines 50000)"),
    ("--batch-max-bytes", "batch_max_bytes", int,
     "largest batch input file in bytes (e.g. --batch-max-bytes 209715200)"),
    ("--batch-expire-rate", "batch_expire_rate", float,
     "share of batch lines that expire unrun (status expired, batch_expired error lines; "
     "e.g. --batch-expire-rate 0.1)"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every option of SimulatorConfig, with its default and an example."""
    defaults = SimulatorConfig()
    parser.add_argument("--host", default=defaults.host,
                        help="interface to listen on; loopback unless you mean otherwise "
                             "(default %(default)s, e.g. --host 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080,
                        help="TCP port; 0 picks a free one (default %(default)s, e.g. --port 0)")
    parser.add_argument("--api-key", default=None, metavar="KEY",
                        help="require 'Authorization: Bearer KEY'; without it any key is "
                             "accepted (e.g. --api-key sk-local)")
    parser.add_argument("--model", action="append", default=[], metavar="NAME",
                        help="serve this model too, besides every model of the price table; "
                             "repeatable; unpriced models cost $0 (e.g. --model my-vlm)")
    for flag, name, kind, text in _OPTIONS:
        metavar = "RATE" if name.startswith("rate_") else name.rsplit("_", 1)[-1].upper()
        parser.add_argument(flag, type=kind, default=getattr(defaults, name), metavar=metavar,
                            help=f"{text}; default %(default)s")
    parser.add_argument("--ignore-json-prompts", action="store_true",
                        help="answer prose even when the prompt asks for JSON against a quoted "
                             "schema (--schema-mode prompt), as a model that ignores the "
                             "instruction would (e.g. --ignore-json-prompts to test "
                             "schema_mismatch rows)")
    parser.add_argument("--log", default=None, metavar="FILE",
                        help="append one JSON line per request, image data truncated "
                             "(e.g. --log /tmp/sim.jsonl)")
    parser.add_argument("--prices", default=None, metavar="FILE",
                        help="price-table overrides, same shape as beam_caption/cost/prices.json "
                             "(e.g. --prices my-prices.json)")


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """Build (and validate: ConfigError) the SimulatorConfig the parsed flags describe."""
    values = {name: getattr(args, name) for _, name, _, _ in _OPTIONS}
    return SimulatorConfig(host=args.host, port=args.port, api_key=args.api_key,
                           models=tuple(args.model), log_path=args.log,
                           prices_path=args.prices,
                           ignore_json_prompts=args.ignore_json_prompts, **values)


def _announce(config: SimulatorConfig, port: int) -> None:
    """Print the base URL to point clients at; warn when other machines can reach it."""
    handle = SimulatorHandle(config.host, port)
    print(f"beam-caption simulator listening on {handle.base_url} (captions are synthetic; "
          f"Ctrl-C stops); --provider anthropic or gemini: --base-url {handle.root_url}",
          flush=True)
    if not is_loopback_host(config.host):
        log.warning("listening on %s: other machines can reach this simulator", config.host)


def main(args: argparse.Namespace, extra: list[str]) -> int:
    """Run until Ctrl-C (or SIGTERM); exit 0 after a clean stop."""
    config = config_from_args(args)
    # SIGINT and SIGTERM end the serving loop; a Ctrl-C before it started interrupts instead.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_until_stopped(config, functools.partial(_announce, config)))
    print("simulator stopped", flush=True)
    return 0
