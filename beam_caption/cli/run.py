"""`beam-caption run`: caption images into Parquet."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions

from beam_caption import job as pl
from beam_caption.auth.gcloud import settle_gcs_credentials
from beam_caption.auth.keys import require_api_key
from beam_caption.auth.secrets import check_secret_access
from beam_caption.batch import ledger as bs
from beam_caption.batch.output_state import check_output as check_batch_output
from beam_caption.cli import batch as batch_cli
from beam_caption.cli.live import LiveProgress
from beam_caption.cli.run_config import build_run_config
from beam_caption.config import RunConfig
from beam_caption.cost.pricing import load_prices, unpriced_hint
from beam_caption.engine.stop import INTERRUPTED
from beam_caption.errors import ConfigError
from beam_caption.inputs.sources import InputTally, check_inputs, tally_inputs
from beam_caption.loopback import is_loopback_url
from beam_caption.options import add_caption_arguments, refuse_unknown
from beam_caption.pipeline.journal import journal_runs
from beam_caption.pipeline.outputs import (
    answer_sources,
    check_output_name,
    prepare_output,
    print_preview,
    stop_message,
)
from beam_caption.pipeline.resume import AnswerSources
from beam_caption.pipeline.summary import read_summary, update_summary
from beam_caption.runner.forked import ForkedWorkers
from beam_caption.runner.local import EXIT_INTERRUPTED, run_local

_LOG = logging.getLogger("beam_caption.run")
ACCEPTS_BEAM_OPTIONS = True
DESCRIPTION = """Caption images with a vision-language model and write Parquet.

Reads image URIs, shrinks each image, calls an OpenAI-compatible chat-completions endpoint with
many requests in flight, and writes captions-*.parquet (one row per image, with tokens and cost),
errors-*.parquet (one row per image that failed, with a code) and run-summary.json to --output.
Any flag not listed here passes through to Beam (--runner, --direct_num_workers, Dataflow options).
The API key is read from $OPENAI_API_KEY (or --api-key-env / --api-key-file) and never logged."""
EPILOG = """examples:
  # the bundled photos against the local simulator (synthetic captions, no key needed)
  beam-caption run --simulate --input 'samples/*.jpg' --output out/demo

  # a real endpoint: OPENAI_API_KEY=sk-... in the environment
  beam-caption run --input '/photos/**/*.jpg' --output out/photos --model gpt-5.4-nano \\
      --prompt 'Describe this photo in one sentence.' --max-side 512 --rpm 5000

  # a manifest with per-row ids, two local worker processes
  beam-caption run --manifest images.csv --output out/run1 --direct_num_workers=2

  # Google Cloud Dataflow: the key from Secret Manager, 10 workers of 4 vCPUs
  beam-caption run --input 'gs://archive/**/*.jpg' --output gs://captions/run1 \\
      --api-key-secret projects/P/secrets/openai-api-key/versions/latest --rpm 5000 \\
      --runner DataflowRunner --project P --region us-central1 --temp_location gs://tmp/beam \\
      --max_num_workers 10 --machine_type n2-standard-4

query the result:
  duckdb -c "select uri, caption, cost_usd from 'out/demo/captions-*.parquet' limit 5"

Ctrl-C (or SIGTERM) stops sending, lets the requests in flight finish (--interrupt-grace), writes
every answer and exits 130; run the same command with --resume to caption the rest. A second
Ctrl-C quits at once: the answers already received are kept in OUTPUT/_journal/ for --resume.

exit codes: 0 done (error rows are data, see errors-*.parquet); 1 the run stopped early (bad key,
no quota, spend cap); 2 a bad flag or input; 130 interrupted."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The run flags (see beam_caption.options)."""
    add_caption_arguments(parser)


def main(args: argparse.Namespace, beam_flags: list[str]) -> int:
    """Run the job; returns the exit code."""
    refuse_unknown(beam_flags, "run")
    check_output_name(args.output)
    local = pl.is_local(pl.pipeline_options(beam_flags))
    settle_gcs_credentials([*(args.input or ()), args.manifest or "", args.output,
                            *(args.incremental or ()), args.schema or ""])
    check_inputs(list(args.input or ()), args.manifest)
    tally = tally_inputs(list(args.input or ()), args.manifest) if local else None
    expected = tally.images if tally else None
    options = pl.pipeline_options(beam_flags, in_process=_small(tally))
    workers, how = pl.expected_worker_processes(options)
    # Before any thread starts (the --simulate server, the progress line): see runner/forked.py.
    forked = ForkedWorkers((workers or 0) if local and _multi_processing(options) else 0)
    with forked, _endpoint(args) as base_url, tempfile.TemporaryDirectory(
            prefix="beam-caption-control-") as control_dir:
        config = build_run_config(args, workers=workers, base_url=base_url,
                                  expected_images=expected,
                                  control_dir=control_dir if local else None)
        _log_division(args, config, how)
        _check_key(config, local)
        if config.batch.enabled and config.simulate and not config.batch.wait:
            raise ConfigError("--simulate stops its simulator, and its batches, when this "
                              "command ends: use --wait, or start `beam-caption simulate` and "
                              "pass --base-url")
        answered = _answered_outputs(config)
        # Batches still open in this output would be sent (and paid for) twice.
        check_batch_output(config.output, overwrite=config.overwrite)
        supersede = prepare_output(config.output, overwrite=config.overwrite,
                                   resume=config.resume)
        carry = next((a for a in answered if a.output == config.output), None)
        journals = journal_runs(config.output) if config.resume else ()
        _log_price(args, config)
        live = LiveProgress(control_dir, expected, args.progress_interval) if local else None
        job = _Job(config, answered, carry if config.resume else None, supersede, journals)
        return _run(job, options, live)


def _log_price(args: argparse.Namespace, config: RunConfig) -> None:
    """Say once how the model is priced: not at all (cost columns null), or as another name."""
    model, price = config.caption.request.model, config.caption.price
    if price is None:
        _LOG.warning("no price for model %s in the price table: cost columns will be null "
                     "(%s)", model, unpriced_hint(load_prices(args.prices), model))
    elif price.model != model:
        _LOG.info("pricing %s as %s", model, price.model)


def _multi_processing(options: PipelineOptions) -> bool:
    return options.view_as(DirectOptions).direct_running_mode == "multi_processing"


def _small(tally: InputTally | None) -> bool:
    """A local job small enough to run in this process (runner/workers.py); says so."""
    if tally is None or not pl.in_process_is_faster(*tally):
        return False
    _LOG.info("%d images (%.0f MB): running in this process, since starting worker processes "
              "would take longer than the work (--direct_num_workers N to choose)",
              tally.images, tally.bytes / 1e6)
    return True


def _log_division(args: argparse.Namespace, config: RunConfig, how: str) -> None:
    """Say once what the limits are divided by (or that --rate-limiter keeps them job-wide)."""
    divided = [flag for flag, value in (("--rpm", args.rpm), ("--tpm", args.tpm),
                                        ("--max-cost-usd", args.max_cost_usd))
               if value and not (flag != "--max-cost-usd" and args.rate_limiter)]
    if divided:
        _LOG.info("%s divided among %d worker processes (%s)", "/".join(divided),
                  config.caption.limits.workers, "--workers-hint" if args.workers_hint else how)


@dataclass(frozen=True)
class _Job:
    """What the launcher decided about the output before building the graph."""

    config: RunConfig
    answered: tuple[AnswerSources, ...]  # outputs whose answers are not sent again
    carry: AnswerSources | None  # the resumed output's journal and billed errors
    supersede: tuple[str, ...]  # earlier error files this run's errors replace
    journals: tuple[str, ...]  # earlier runs' journals this run folds in, deleted at the end


def _answered_outputs(config: RunConfig) -> tuple[AnswerSources, ...]:
    """The earlier outputs whose answers this run must not pay for again."""
    found = []
    for earlier in config.skip_done_in:
        source = answer_sources(earlier)
        if earlier != config.output:
            open_batches = bs.load_ledger(earlier).open_runs()
            if open_batches:
                # Their images have no rows yet: this run would pay for them again.
                raise ConfigError(
                    f"--incremental {earlier} has a batch-mode run ({open_batches[0].run_id}) "
                    f"that is not collected yet: `beam-caption batch collect {earlier} --wait` "
                    "first, or its images are paid for twice")
            if not source.captions:
                raise ConfigError(f"--incremental {earlier} holds no captions-*.parquet")
            if source.journal:
                _LOG.warning("--incremental %s holds answers of an interrupted run that are not "
                             "in its tables yet: resume it first (beam-caption run ... --output "
                             "%s --resume), or they are sent again here", earlier, earlier)
                source = source._replace(journal=False)
        if source.captions or source.errors or source.journal:
            found.append(source)
    return tuple(found)


def _run(job: _Job, options: PipelineOptions, live: LiveProgress | None) -> int:
    config = job.config
    started = time.monotonic()
    runner, run_options = pl.make_runner(options)
    p = beam.Pipeline(runner=runner, options=run_options)
    pl.build_pipeline(p, config, answered=job.answered, carry=job.carry,
                      supersede=job.supersede, journals=job.journals,
                      checkpoint=live is None, local=live is not None)
    _LOG.info("run %s: model %s, endpoint %s, output %s", config.caption.run_id,
              config.caption.request.model, config.caption.endpoint.base_url, config.output)
    if config.batch.enabled:
        # The job writes the request files and submits them; the rows come from collect.
        return batch_cli.run_batch_job(p, config, local=live is not None)
    if live is None:
        p.run()  # a remote runner: the launcher starts the job and returns
        _LOG.info("job submitted; follow it in the runner's console")
        return 0
    assert config.caption.control_dir is not None
    with live:
        result, interrupted = run_local(p, control_dir=config.caption.control_dir,
                                        grace_s=config.caption.interrupt_grace_s,
                                        output=config.output)
    counters = _beam_counters(result)
    summary = _augment_summary(config.output, counters, time.monotonic() - started)
    print_preview(config.output, summary)
    if interrupted:
        left = summary["errors_by_code"].get(INTERRUPTED, 0)
        print(f"beam-caption: interrupted: {summary['captions']} captions are written to "
              f"{config.output}; {left} images were not captioned: run the same command with "
              "--resume to caption them", file=sys.stderr)
        return EXIT_INTERRUPTED
    if counters.get("run_stopped"):
        print(f"beam-caption: stopped early: {stop_message(config.output)}")
        return 1
    return 0


@contextlib.contextmanager
def _endpoint(args: argparse.Namespace) -> Iterator[str | None]:
    """Yield the base URL to use: the in-process simulator's with --simulate, else None."""
    if not args.simulate:
        yield None
        return
    if args.base_url:
        raise ConfigError("--simulate and --base-url exclude each other")
    from beam_caption.simulator import running_simulator

    with running_simulator() as sim:
        # OpenAI's base URL ends in /v1; Anthropic's and Gemini's are the server's root.
        url = sim.base_url if (args.provider or "openai") == "openai" else sim.root_url
        _LOG.info("simulator listening at %s (captions are synthetic)", url)
        yield url


def _check_key(config: RunConfig, local: bool) -> None:
    """Fail before any work when the endpoint needs a key the job's workers could not get.

    A local run reads it here (environment, file; a secret is read by the workers). A remote
    runner's workers see neither this machine's environment nor its files: a remote endpoint
    needs --api-key-secret, and the secret is read once from here before the job is submitted.
    """
    endpoint = config.caption.endpoint
    if local:
        if not endpoint.api_key_secret:
            require_api_key(endpoint.base_url, endpoint.api_key_env, endpoint.api_key_file)
        return
    if is_loopback_url(endpoint.base_url):
        return  # the workers' own loopback (a server beside them) needs no key
    if not endpoint.api_key_secret:
        raise ConfigError(f"a remote run needs --api-key-secret for {endpoint.base_url}: its "
                          "workers see neither this machine's environment nor its files, so "
                          "$OPENAI_API_KEY, --api-key-env and --api-key-file cannot reach them")
    check_secret_access(endpoint.api_key_secret)


def _beam_counters(result: Any) -> dict[str, Any]:
    """The run's beam_caption counters, plus distributions as {count, mean, min, max}."""
    metrics = result.metrics().query()
    counters: dict[str, Any] = {}
    for counter in metrics["counters"]:
        if counter.key.metric.namespace == "beam_caption":
            name = counter.key.metric.name
            counters[name] = counters.get(name, 0) + (counter.committed or 0)
    merged: dict[str, list[int]] = {}
    for dist in metrics["distributions"]:
        data = dist.committed
        if dist.key.metric.namespace != "beam_caption" or data is None or not data.count:
            continue
        count, total, low, high = merged.get(dist.key.metric.name, [0, 0, data.min, data.max])
        merged[dist.key.metric.name] = [count + data.count, total + data.sum,
                                        min(low, data.min), max(high, data.max)]
    for name, (count, total, low, high) in merged.items():
        counters[name] = {"count": count, "mean": round(total / count, 1), "min": low,
                          "max": high}
    return counters


def _augment_summary(output: str, counters: dict[str, Any], wall_s: float) -> dict[str, Any]:
    """Add wall time, throughput and engine counters to run-summary.json (local runs only)."""
    images = (read_summary(output) or {}).get("images", 0)
    return update_summary(output, wall_seconds=round(wall_s, 3),
                          images_per_second=round(images / wall_s, 3) if wall_s else None,
                          engine={name: counters[name] for name in sorted(counters)})
