"""The main job's graph, and the choice of runner and pipeline options.

`build_pipeline` reads like the data flow in DESIGN.md:
ExpandInputs -> Reshuffle -> PrepareImages -> CaptionImages -> WriteCaptions.
"""

from __future__ import annotations

import multiprocessing
import re
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    DirectOptions,
    GoogleCloudOptions,
    PipelineOptions,
    StandardOptions,
    WorkerOptions,
)

from beam_caption.batch_pipeline import submit_batches
from beam_caption.config import RunConfig
from beam_caption.resume import SkipDone
from beam_caption.schema import captions_schema
from beam_caption.sinks import WriteCaptions
from beam_caption.sources import ExpandInputs
from beam_caption.structured import arrow_fields
from beam_caption.transforms import CaptionImages, PrepareImages

LOCAL_RUNNERS = ("DirectRunner", "FnApiRunner", "BundleBasedDirectRunner", "PrismRunner")


def pipeline_options(beam_flags: list[str]) -> PipelineOptions:
    """Beam options from the pass-through flags, with local defaults that use every core.

    When no runner is named the job runs on Beam's FnApiRunner (what the DirectRunner falls back to
    after trying to download the Prism binary, which fails offline), in multi-processing mode with
    one worker per core unless --direct_running_mode / --direct_num_workers say otherwise.
    """
    flags = list(beam_flags)
    names = {f.split("=", 1)[0] for f in flags if f.startswith("--")}
    if "--runner" not in names or is_local(PipelineOptions(flags)):
        if "--direct_running_mode" not in names:
            flags.append("--direct_running_mode=multi_processing")
        mode = PipelineOptions(flags).view_as(DirectOptions).direct_running_mode
        if "--direct_num_workers" not in names and mode != "in_memory":
            flags.append("--direct_num_workers=0")
    return PipelineOptions(flags)


def is_local(options: PipelineOptions) -> bool:
    """True when the job runs on this machine."""
    runner = options.view_as(StandardOptions).runner
    return runner is None or runner.rsplit(".", 1)[-1] in LOCAL_RUNNERS


def make_runner(options: PipelineOptions) -> Any:
    """The runner to use: FnApiRunner for local runs, else whatever --runner names."""
    if is_local(options):
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return FnApiRunner()
    return options.view_as(StandardOptions).runner


def expected_worker_processes(options: PipelineOptions) -> int:
    """How many processes will send requests at once, to divide --rpm/--tpm/--max-cost-usd."""
    if is_local(options):
        direct = options.view_as(DirectOptions)
        if direct.direct_running_mode != "multi_processing":
            return 1
        return direct.direct_num_workers or multiprocessing.cpu_count()
    workers = options.view_as(WorkerOptions)
    machines = workers.max_num_workers or workers.num_workers or 1
    # Dataflow runs one Python SDK process per vCPU; machine types end in their vCPU count.
    match = re.search(r"-(\d+)$", workers.machine_type or "")
    return machines * (int(match.group(1)) if match else 1)


def build_pipeline(pipeline: beam.Pipeline, config: RunConfig, *,
                   skip_done_in: tuple[str, ...] = (), supersede: tuple[str, ...] = ()
                   ) -> beam.PCollection:
    """Add the whole caption job to `pipeline`; returns the summary-path PCollection
    (in batch mode: the run id, once its batches are submitted).

    `skip_done_in`: outputs with captions whose request_keys are not sent again (resume).
    `supersede`: earlier error files, deleted once this run's files are written.
    """
    run_id = config.caption.run_id
    refs = pipeline | "ExpandInputs" >> ExpandInputs(list(config.inputs), config.manifest,
                                                     prompt_column=config.prompt_column)
    if skip_done_in:
        refs = refs | "SkipDone" >> SkipDone(skip_done_in, config.fetch, config.caption)
    prepared = refs | "PrepareImages" >> PrepareImages(config.prepare, config.fetch,
                                                       run_id=run_id, caption=config.caption)
    run_info = {"run_id": run_id, "model": config.caption.request.model,
                "prompt": config.caption.request.prompt,
                "base_url": config.caption.endpoint.base_url,
                "max_side": config.prepare.max_side,
                "max_cost_usd": config.caption.max_cost_usd}
    if config.batch.enabled:
        # Shard files + one submission step; rows and the summary come from `batch collect`.
        return submit_batches(prepared, config, run_info, supersede=supersede)
    captioned = prepared.images | "CaptionImages" >> CaptionImages(config.caption)
    errors = (prepared.errors, captioned.errors) | "AllErrors" >> beam.Flatten()
    spec = config.caption.structured
    schema = captions_schema(arrow_fields(spec.schema) if spec else None)
    return (captioned.captions, errors) | "WriteCaptions" >> WriteCaptions(
        config.output, run_info, schema=schema, supersede=supersede)


def project_of(options: PipelineOptions) -> str | None:
    """The GCP project named in the options, if any."""
    return options.view_as(GoogleCloudOptions).project
