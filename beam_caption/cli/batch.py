"""`beam-caption batch submit|status|collect|cancel OUTPUT`, and what `run --mode batch` does
after its pipeline: wait for the batches with capped backoff, then collect.

Everything works from batches.json in OUTPUT, so any machine with access to the output (and the
key) can follow or finish a batch-mode run that another launcher started.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from typing import Any

from beam_caption.auth.gcloud import settle_gcs_credentials
from beam_caption.batch import ledger as bs
from beam_caption.batch.api import BatchClient, open_client
from beam_caption.batch.collect import collect_run, note_status
from beam_caption.batch.pipeline import provider_args, submit_pending, unresolved_message
from beam_caption.batch.waiting import POLL_CAP_FACTOR, wait_for_batches
from beam_caption.batch.wire import TERMINAL
from beam_caption.config import RunConfig
from beam_caption.errors import BeamCaptionError, ConfigError, RunAborted
from beam_caption.layout import LEDGER_NAME
from beam_caption.pipeline.outputs import print_preview
from beam_caption.runner.local import quit_on_interrupt

_LOG = logging.getLogger("beam_caption.batch")
ACTIONS = ("submit", "status", "collect", "cancel")

DESCRIPTION = """Follow and finish Batch API runs (`beam-caption run --mode batch`).

The Batch API answers within 24 hours at half the realtime price. `run --mode batch` writes the
requests as JSONL shard files in OUTPUT/batch/, submits them and records every file and batch id
in OUTPUT/batches.json; these commands read that file, so they work from any machine:
  submit   upload and submit shards that have no batch yet (a launcher died while submitting);
           shards another live process is submitting are left to it
  status   show each batch's status and request counts
  collect  write the rows of finished batches (captions-*.parquet, errors-*.parquet,
           run-summary.json); with --wait, first wait until every batch has finished
  cancel   cancel running batches; `collect` then keeps the answers already paid for"""
EPILOG = """examples:
  beam-caption run --mode batch --no-wait --input 'photos/*.jpg' --output out/b
  beam-caption batch status out/b
  beam-caption batch collect out/b --wait --poll-interval 60
  beam-caption batch cancel out/b && beam-caption batch collect out/b --wait

Requests a batch did not answer (expired, cancelled, failed) become error rows; a later
`beam-caption run --resume` (realtime or --mode batch) sends exactly those again."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The action, the output directory, waiting, and endpoint/key overrides."""
    parser.add_argument("action", choices=ACTIONS, help="what to do (see above)")
    parser.add_argument("output", metavar="OUTPUT",
                        help="the --output of the batch-mode run (local or gs://)")
    parser.add_argument("--wait", action=argparse.BooleanOptionalAction, default=False,
                        help="submit/collect: wait until every batch has finished, then collect")
    parser.add_argument("--poll-interval", type=float, default=30.0, metavar="S",
                        help="seconds between status checks while batches progress (the "
                             "first checks come sooner); the wait doubles while nothing changes, "
                             f"up to {POLL_CAP_FACTOR}x (default: 30)")
    parser.add_argument("--resubmit-interrupted", action="store_true",
                        help="submit: also submit shards whose batch creation was interrupted "
                             "where the provider cannot be asked whether it happened "
                             "(Anthropic); check its console first: a batch made twice "
                             "is paid twice")
    parser.add_argument("--base-url", metavar="URL",
                        help="endpoint to use instead of the one the run recorded")
    parser.add_argument("--api-key-env", metavar="NAME",
                        help="variable holding the API key (default: as the run recorded, "
                             "usually OPENAI_API_KEY)")
    parser.add_argument("--api-key-file", metavar="FILE", help="read the API key from this file")
    parser.add_argument("--api-key-secret", metavar="NAME",
                        help="read the API key from Google Secret Manager")


class Clients:
    """One BatchClient per endpoint, from a run's recorded endpoint and any CLI overrides."""

    def __init__(self, overrides: dict[str, Any] | None = None,
                 factory: Callable[..., BatchClient] = open_client) -> None:
        self._overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
        self._factory = factory
        self._made: dict[tuple[Any, ...], BatchClient] = {}

    def for_run(self, run: bs.RunRecord) -> BatchClient:
        """The client for `run`'s endpoint."""
        where = dict(run.endpoint)
        if {"api_key_env", "api_key_file", "api_key_secret"} & set(self._overrides):
            # A key source named on the command line replaces the recorded ones.
            where.update(api_key_file=None, api_key_secret=None)
        where.update(self._overrides)
        key = (where["base_url"], where.get("api_key_env") or "OPENAI_API_KEY",
               where.get("api_key_file"),
               where.get("api_key_secret"))
        extra = provider_args(run)
        made = (*key, *sorted(extra.items()))
        if made not in self._made:
            self._made[made] = self._factory(*key, **extra)
        return self._made[made]


def main(args: argparse.Namespace, extra: list[str]) -> int:
    """Dispatch the action; returns the exit code. Ctrl-C or SIGTERM stops at once and loses
    nothing (every step is recorded in batches.json as it happens)."""
    output = args.output.rstrip("/")
    with quit_on_interrupt(f"interrupted; nothing is lost: `beam-caption batch {args.action} "
                           f"{output}` carries on from {LEDGER_NAME}"):
        return _main(args, output)


def _main(args: argparse.Namespace, output: str) -> int:
    settle_gcs_credentials([output])
    ledger = bs.load_ledger(output)
    if not ledger.runs:
        raise ConfigError(f"{output} has no {LEDGER_NAME}: start a batch with "
                          f"`beam-caption run --mode batch --output {output} ...`")
    if args.poll_interval <= 0:
        raise ConfigError("--poll-interval must be positive")
    clients = Clients({"base_url": args.base_url, "api_key_env": args.api_key_env,
                       "api_key_file": args.api_key_file,
                       "api_key_secret": args.api_key_secret})
    if args.action == "status":
        print_status(output, ledger, clients)
        return 0
    if args.action == "cancel":
        return cancel(output, ledger, clients)
    if args.action == "submit":
        waiting = False
        for run in ledger.open_runs():
            done = submit_pending(output, ledger, run, clients.for_run(run),
                                  resubmit_interrupted=args.resubmit_interrupted)
            print(f"run {run.run_id}: {done.created} batches submitted now, "
                  f"{sum(1 for s in run.shards if s.batch_id) - done.created} submitted before"
                  + (f", {len(done.busy)} being submitted by another process" if done.busy
                     else ""))
            if done.unresolved:
                print(unresolved_message(output, run, done.unresolved))
            waiting = waiting or bool(done.busy or done.unresolved)
        if waiting:
            return 1
        if not args.wait:
            print(f"follow them: beam-caption batch status {output}")
            return 0
    return wait_and_collect(output, ledger, clients, args.poll_interval, wait=args.wait)


def wait_and_collect(output: str, ledger: bs.BatchLedger, clients: Clients,
                     poll_interval_s: float, *, wait: bool = True,
                     sleep: Callable[[float], None] = time.sleep) -> int:
    """Optionally wait for every submitted batch to end, then collect what has ended."""
    runs = ledger.open_runs()
    if wait:
        wait_for_batches(output, ledger, runs, clients, poll_interval_s, sleep=sleep)
    waiting = 0
    for run in runs:
        summary = collect_run(output, ledger, run, clients.for_run(run))
        if summary is not None:
            print_preview(output, summary)
            print(f"batch run {run.run_id}: ${summary['cost_usd'] or 0:.6f} at batch prices "
                  f"(${summary['batch']['cost_usd_at_realtime_prices'] or 0:.6f} in realtime)")
            continue
        unsubmitted = len(run.unsubmitted())
        if unsubmitted:
            print(f"run {run.run_id}: {unsubmitted} shard files were never submitted: run "
                  f"`beam-caption batch submit {output}`")
        waiting += 1
    if waiting and not wait:
        print(f"{waiting} runs still have batches running: collect again later, or add --wait")
    return 1 if waiting and wait else 0


def print_status(output: str, ledger: bs.BatchLedger, clients: Clients) -> None:
    """One line per run and per shard: batch id, status, request counts (asks the API for open
    runs; batches.json is not changed)."""
    for run in ledger.runs:
        print(f"run {run.run_id} ({run.state}, {len(run.shards)} shard files, "
              f"{sum(s.lines for s in run.shards)} requests)")
        client = clients.for_run(run) if run.open else None
        for shard in run.shards:
            status, counts = shard.status, shard.counts
            if client is not None and shard.batch_id and status not in TERMINAL:
                info = client.get(shard.batch_id)
                status, counts = info.status, info.counts
            done = f"{counts.get('completed', 0)}/{counts.get('total') or shard.lines} done, " \
                   f"{counts.get('failed', 0)} failed" if counts else f"{shard.lines} requests"
            print(f"  shard {shard.index + 1}: {shard.batch_id or 'not submitted'} {status}, "
                  f"{done}{', collected' if shard.collected else ''}")
    if ledger.open_runs():
        print(f"collect: beam-caption batch collect {output} --wait")


def cancel(output: str, ledger: bs.BatchLedger, clients: Clients) -> int:
    """Cancel every running batch of the open runs; unsubmitted shards are never submitted."""
    cancelled = 0
    runs = ledger.open_runs()
    with bs.transaction(output, ledger):  # every shard at once: none is sent from now on
        for run in runs:
            for shard in run.shards:
                if not (shard.collected or shard.status in TERMINAL):
                    shard.cancel_requested = True
    for run in runs:
        client = clients.for_run(run)
        for shard in run.shards:
            if shard.cancel_requested and shard.batch_id is not None and not (
                    shard.collected or shard.status in TERMINAL):
                note_status(shard, client.cancel(shard.batch_id))
                cancelled += 1
                bs.save_ledger(output, ledger)
    print(f"{cancelled} batches cancelled; answers already made are kept and billed: write "
          f"their rows with `beam-caption batch collect {output} --wait`")
    return 0


def run_batch_job(pipeline: Any, config: RunConfig, *, local: bool) -> int:
    """`run --mode batch` after building the job: run it (it submits the batches), then wait
    and collect per --wait. A remote job is started and left to run."""
    # Stopping anywhere loses nothing: batches.json records each upload and batch as it is made,
    # and a shard being submitted is claimed (batch/claims.py), so `batch submit` finishes the
    # rest without paying twice. (Beam's own KeyboardInterrupt inside an in-process run printed
    # three tracebacks and exited 1.)
    output = config.output
    with quit_on_interrupt(
            f"interrupted; what was submitted is recorded in {output}/{LEDGER_NAME}: "
            f"`beam-caption batch submit {output}` sends the rest, `beam-caption batch collect "
            f"{output} --wait` writes the rows"):
        return _run_batch_job(pipeline, config, local=local)


class _KnownErrors(logging.Filter):
    """Drops Beam's ERROR record (with its traceback) of a step that failed with one of our
    errors: the error becomes one line naming the next command instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a record carrying a BeamCaptionError."""
        return not (record.exc_info and isinstance(record.exc_info[1], BeamCaptionError))


def _run_batch_job(pipeline: Any, config: RunConfig, *, local: bool) -> int:
    output = config.output
    known = _KnownErrors()
    step_errors = logging.getLogger("apache_beam.runners.common")
    step_errors.addFilter(known)
    try:
        result = pipeline.run()
        if local:
            result.wait_until_finish()
    except BeamCaptionError as exc:  # the submission step's API error, re-raised by the runner
        raise RunAborted(f"submitting the batches failed: {exc}. What was submitted is in "
                         f"{output}/{LEDGER_NAME}; fix the cause, then `beam-caption batch "
                         f"submit {output}`") from None
    finally:
        step_errors.removeFilter(known)
    if not local:
        print(f"job started: it submits the batches once the request files are written; then "
              f"`beam-caption batch status {output}` and `beam-caption batch collect {output} "
              "--wait`")
        return 0
    if not config.batch.wait:
        print(f"batches submitted; collect their rows later with `beam-caption batch collect "
              f"{output} --wait` (status: `beam-caption batch status {output}`)")
        return 0
    return wait_and_collect(output, bs.load_ledger(output), Clients(), config.batch.poll_interval_s)
