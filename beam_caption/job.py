"""The main job's graph, and the choice of runner and pipeline options.

`build_pipeline` reads like the data flow in DESIGN.md:
ExpandInputs -> Reshuffle -> PrepareImages -> CaptionImages -> WriteCaptions.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    StandardOptions,
)

from beam_caption.batch.pipeline import submit_batches
from beam_caption.config import RunConfig
from beam_caption.inputs.library import LOCAL_BUCKETS, SortLibrary
from beam_caption.inputs.sources import ExpandInputs
from beam_caption.pipeline.caption import CaptionImages
from beam_caption.pipeline.near_dedupe import GroupNearDuplicates, ShareCaptions
from beam_caption.pipeline.prepare import PrepareImages
from beam_caption.pipeline.resume import AnswerSources, CarriedRows, SkipDone
from beam_caption.pipeline.sinks import WriteCaptions
from beam_caption.runner.local import local_runner
from beam_caption.runner.workers import (
    expected_worker_processes,
    in_process_is_faster,
    is_local,
)

__all__ = ["build_pipeline", "expected_worker_processes", "in_process_is_faster", "is_local",
           "make_runner", "pipeline_options"]

def pipeline_options(beam_flags: list[str], *, in_process: bool = False) -> PipelineOptions:
    """Beam options from the pass-through flags, with local defaults that use every core.

    When no runner is named the job runs on Beam's FnApiRunner (what the DirectRunner falls back to
    after trying to download the Prism binary, which fails offline), in multi-processing mode with
    one worker per core unless --direct_running_mode / --direct_num_workers say otherwise.
    `in_process`: a small local job (runner/workers.py's in_process_is_faster) runs in this
    process instead, unless those flags say otherwise.
    """
    flags = list(beam_flags)
    names = {f.split("=", 1)[0] for f in flags if f.startswith("--")}
    if "--runner" not in names or is_local(PipelineOptions(flags)):
        if in_process and not names & {"--direct_running_mode", "--direct_num_workers"}:
            return PipelineOptions([*flags, "--direct_running_mode=in_memory",
                                    "--direct_num_workers=1"])
        if "--direct_running_mode" not in names:
            flags.append("--direct_running_mode=multi_processing")
        mode = PipelineOptions(flags).view_as(DirectOptions).direct_running_mode
        if "--direct_num_workers" not in names and mode != "in_memory":
            flags.append("--direct_num_workers=0")
    return PipelineOptions(flags)


def make_runner(options: PipelineOptions) -> tuple[Any, PipelineOptions]:
    """(runner, options to run with): FnApiRunner with Ctrl-C-proof workers for local runs
    (runner/local.py), else whatever --runner names."""
    if is_local(options):
        return local_runner(options)
    return options.view_as(StandardOptions).runner, options


def _caption(images: beam.PCollection, config: RunConfig,
             checkpoint: bool) -> tuple[list, list, list]:
    """CaptionImages, with --near-dedupe around it: ([captions], [errors], [summary notes])."""
    near = None
    if config.near is not None:
        near = images | "NearDuplicates" >> GroupNearDuplicates(config.caption, config.near)
        images = near.representatives
    captioned = images | "CaptionImages" >> CaptionImages(config.caption, checkpoint=checkpoint)
    if near is None:
        return [captioned.captions], [captioned.errors], []
    shared = ((captioned.captions, captioned.errors, near.followers)
              | "ShareCaptions" >> ShareCaptions(config.caption))
    return ([captioned.captions, shared.captions], [captioned.errors, shared.errors],
            [shared.saved])


def build_pipeline(pipeline: beam.Pipeline, config: RunConfig, *,
                   answered: tuple[AnswerSources, ...] = (), carry: AnswerSources | None = None,
                   supersede: tuple[str, ...] = (), journals: tuple[str, ...] = (),
                   checkpoint: bool = True, local: bool = False) -> beam.PCollection:
    """Add the whole caption job to `pipeline`; returns the summary-path PCollection
    (in batch mode: the run id, once its batches are submitted).

    `answered`: earlier outputs whose answers are not sent again (--resume, --incremental);
    `carry`: the resumed output, whose journal rows and billed error rows this run writes again;
    `supersede`: earlier error files, deleted once this run's files are written;
    `journals`: earlier runs' journals to delete then (this run's own always goes);
    `checkpoint`: a Reshuffle after the paid calls (runners that retry fused bundles);
    `local`: the job runs on this machine (the FnApiRunner), which groups in fewer, fuller packs.
    """
    run_id = config.caption.run_id
    # SortLibrary's grouping is the shuffle that spreads the images over workers (and breaks
    # fusion on Dataflow): ExpandInputs' own Reshuffle would move every image once more.
    refs = pipeline | "ExpandInputs" >> ExpandInputs(list(config.inputs), config.manifest,
                                                     prompt_column=config.prompt_column,
                                                     reshuffle=False)
    # Sidecars, system files and Live Photo motion parts are counted, not sent.
    library = refs | "SortLibrary" >> SortLibrary(
        config.library, buckets=LOCAL_BUCKETS if local else None)
    refs = library.media
    if answered:
        refs = refs | "SkipDone" >> SkipDone(answered, config.fetch, config.caption)
    prepared = refs | "PrepareImages" >> PrepareImages(
        config.prepare, config.fetch, run_id=run_id,
        progress=config.caption.progress_settings)
    if config.batch.enabled:
        # Shard files + one submission step; rows and the summary come from `batch collect`.
        # A resumed output's paid answers (journal, billed errors) are written now, under this
        # run's name, so collect's summary counts them; their journals go when it closes.
        carried = pipeline | "CarriedRows" >> CarriedRows(carry) if carry is not None else None
        return submit_batches(prepared, config, supersede=supersede, carried=carried,
                              journals=journals, skipped=library.skipped)
    captions, errors, notes = _caption(prepared.images, config, checkpoint)
    errors.append(prepared.errors)
    notes.append(library.skipped | "TagSkipped" >> beam.Map(lambda row: ("skipped", row)))
    if carry is not None:
        carried = pipeline | "CarriedRows" >> CarriedRows(carry)
        captions.append(carried.captions)
        errors.append(carried.errors)
    # Branches, not Flattens: WriteCaptions writes and tallies each where its rows are.
    return ((tuple(captions), tuple(errors), tuple(notes))
            | "WriteCaptions" >> WriteCaptions(config.output, config.caption,
                                               supersede=supersede, journals=journals))
