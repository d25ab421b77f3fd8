"""Batch mode's part of the job: JSONL request shards on the output, then one submission step.

    prepared.images | BuildBatchLines(config)        # PreparedImage -> BatchItem (a JSONL line)
                    | WriteBatchShards(output, ...)  # distributed: shard files + metadata sidecars
                    | SubmitShards(...)              # runs once: upload, create, batches.json

The shards are batch/shards.py's. A retried bundle leaves unreferenced files, which the
submission step deletes.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_caption.api.errors import ApiError
from beam_caption.batch import claims
from beam_caption.batch import ledger as bs
from beam_caption.batch.api import BatchClient, open_client
from beam_caption.batch.collect import note_status
from beam_caption.batch.shards import BuildBatchLines, ShardInfo, WriteBatchShards
from beam_caption.batch.wire import BatchInfo, ambiguous, shard_metadata
from beam_caption.config import RunConfig
from beam_caption.errors import RunAborted
from beam_caption.layout import BATCH_DIR
from beam_caption.pipeline.prepare import ERRORS
from beam_caption.pipeline.resume import CarriedOutputs
from beam_caption.pipeline.schema import ERRORS_SCHEMA, captions_schema

_LOG = logging.getLogger(__name__)

def record_run(output: str, template: bs.RunRecord,
               shards: list[ShardInfo]) -> tuple[bs.BatchLedger, bs.RunRecord]:
    """Add the run and its shards to batches.json (once: a retried step finds them there)."""
    ledger = bs.load_ledger(output)
    run = ledger.run(template.run_id)
    if run is None:
        ordered = sorted(shards, key=lambda s: s.path)
        run = dataclasses.replace(template, shards=[
            bs.ShardRecord(index=i, path=s.path, meta=s.meta, lines=s.lines, images=s.images,
                           bytes=s.bytes) for i, s in enumerate(ordered)])
        ledger.runs.append(run)
        bs.save_ledger(output, ledger)
        _delete_unreferenced(output, run)
    return ledger, run


def _delete_unreferenced(output: str, run: bs.RunRecord) -> None:
    """Shard files of retried bundles: written, but never emitted, so never submitted."""
    keep = {bs.resolve(output, p) for s in run.shards for p in (s.path, s.meta)}
    pattern = bs.resolve(output, f"{BATCH_DIR}/{run.run_id}/*")
    stray = [m.path for m in FileSystems.match([pattern])[0].metadata_list if m.path not in keep]
    if stray:
        FileSystems.delete(stray)


class Submitted(NamedTuple):
    """What one submit_pending call did: batches created now, shards left to a live submitter,
    and shards whose interrupted inline create waits for the user's word."""

    created: int
    busy: list[int]
    unresolved: list[int]


def submit_pending(output: str, ledger: bs.BatchLedger, run: bs.RunRecord,
                   client: BatchClient, *, resubmit_interrupted: bool = False) -> Submitted:
    """Upload and submit every shard of `run` without a batch, saving after each step.

    Each shard is claimed in batches.json first and the ledger is read again before each one, so
    a concurrent `batch submit` or a second launcher never creates a batch for the same shard,
    and a `batch cancel` meanwhile is obeyed (a batch created while it came is cancelled).
    """
    created, busy, unresolved = 0, [], []
    for index in [s.index for s in run.unsubmitted()]:
        shard = run.shards[index]
        # Look and claim in one transaction: two submitters never both find a shard free.
        with bs.transaction(output, ledger):
            verdict = ("done" if shard.batch_id is not None or shard.cancel_requested
                       else _may_submit(shard, client, resubmit_interrupted))
            if verdict == "yes":
                shard.claim = claims.own_claim()
        if verdict != "yes":
            if verdict != "done":
                (busy if verdict == "busy" else unresolved).append(index)
            continue
        info = _submit_one(output, ledger, run, shard, client)
        created += 1
        _LOG.info("shard %d/%d (%d requests, %.1f MB) submitted as %s", shard.index + 1,
                  len(run.shards), shard.lines, shard.bytes / 1e6, info.id)
        if shard.cancel_requested:  # a `batch cancel` came while it was being created
            note_status(shard, client.cancel(info.id))
            bs.save_ledger(output, ledger)
    bs.refresh(output, ledger)
    busy = [i for i in busy if run.shards[i].batch_id is None]  # those still not done
    for index in busy:
        _LOG.warning("shard %d/%d of run %s is being submitted by another process (%s); left "
                     "to it", index + 1, len(run.shards), run.run_id,
                     _who(run.shards[index].claim))
    if run.state == bs.SUBMITTING and not run.unsubmitted():
        run.state = bs.SUBMITTED
        bs.save_ledger(output, ledger)
    return Submitted(created, busy, unresolved)


def _may_submit(shard: bs.ShardRecord, client: BatchClient, resubmit_interrupted: bool) -> str:
    """"yes"; "busy" (a live process is submitting it); or "unresolved" (its inline create was
    interrupted: the provider may hold its batch, and cannot be asked)."""
    claim = claims.active_claim(shard)
    if claim is None:
        return "yes"
    if not claims.is_own(claim):
        if claims.claim_alive(claim) and not claim.get("unresolved"):
            return "busy"
        if not client.finds_batches and not resubmit_interrupted:
            return "unresolved"
        return "yes"  # OpenAI's create_once finds a batch the dead submitter made
    return "unresolved" if claim.get("unresolved") and not resubmit_interrupted else "yes"


def _submit_one(output: str, ledger: bs.BatchLedger, run: bs.RunRecord, shard: bs.ShardRecord,
                client: BatchClient) -> BatchInfo:
    """Upload (unless uploaded) and create the batch of a shard this process has claimed,
    saving after each step."""
    try:
        if shard.file_id is None:
            shard.file_id = client.upload(bs.resolve(output, shard.path), shard.bytes,
                                          f"{run.run_id}-{shard.index:05d}.jsonl")
            shard.uploaded_at, shard.status = int(time.time()), "uploaded"
            bs.save_ledger(output, ledger)
        info = client.create_once(shard.file_id, shard_metadata(run.run_id, shard.index),
                                  not_before=(shard.uploaded_at or 0) - 60)
    except ApiError as exc:
        if not client.finds_batches and ambiguous(exc):
            shard.claim = {**claims.own_claim(), "unresolved": True}
        else:
            shard.claim = claims.released()  # refused: no batch was made
        bs.save_ledger(output, ledger)
        raise
    shard.batch_id, shard.status, shard.counts = info.id, info.status, info.counts
    shard.claim = None
    bs.save_ledger(output, ledger)  # also reads a cancel that came meanwhile
    return info


def unresolved_message(output: str, run: bs.RunRecord, shards: list[int]) -> str:
    """What to do about shards whose inline create was interrupted (see submit_pending)."""
    names = ", ".join(f"beam-caption-{run.run_id}-{i}" for i in shards)
    return (f"{len(shards)} shard files of run {run.run_id} were being submitted when their "
            f"submitter stopped, and {run.endpoint.get('provider')} cannot be asked whether "
            f"their batches were made: look for batches named {names} in the provider's "
            f"console; if there are none, `beam-caption batch submit {output} "
            f"--resubmit-interrupted` submits them (a batch made twice is paid twice)")


def _who(claim: dict[str, Any] | None) -> str:
    claim = claim or {}
    return f"pid {claim.get('pid')} on {claim.get('host')}"


def provider_args(run: bs.RunRecord) -> dict[str, Any]:
    """open_client's provider arguments for `run` (none for OpenAI, the ledger's default)."""
    provider = run.endpoint.get("provider", "openai")
    return {} if provider == "openai" else {"provider": provider, "model": run.info["model"]}


def _submit_all(shards: list[ShardInfo], output: str, template: bs.RunRecord,
                skipped: dict[str, int] | None = None) -> str:
    if skipped:  # the library's skipped files by kind, for collect's summary
        template = dataclasses.replace(template, skipped=dict(sorted(skipped.items())))
    ledger, run = record_run(output, template, shards)
    endpoint = run.endpoint
    client = open_client(endpoint["base_url"], endpoint["api_key_env"], endpoint["api_key_file"],
                         endpoint["api_key_secret"], **provider_args(run))
    submitted = submit_pending(output, ledger, run, client)
    if submitted.unresolved:
        raise RunAborted(unresolved_message(output, run, submitted.unresolved))
    return run.run_id


class SubmitShards(beam.PTransform):
    """ShardInfo -> the run id, once: every shard recorded, uploaded and submitted in one step."""

    def __init__(self, output: str, template: bs.RunRecord,
                 skipped: beam.PCollection | None = None) -> None:
        super().__init__()
        self._output = output
        self._template = template
        self._skipped = skipped  # one {kind: count} dict (SortLibrary's skipped files)

    def expand(self, shards: beam.PCollection) -> beam.PCollection:
        """A global combine to one list (shard records are small), then one sequential Map."""
        extra = [] if self._skipped is None else [beam.pvalue.AsSingleton(self._skipped)]
        return (shards
                | "AllShards" >> beam.combiners.ToList()
                | "Submit" >> beam.Map(_submit_all, self._output, self._template, *extra))


def submit_batches(prepared: Any, config: RunConfig, supersede: tuple[str, ...] = (),
                   carried: CarriedOutputs | None = None, journals: tuple[str, ...] = (),
                   skipped: beam.PCollection | None = None) -> beam.PCollection:
    """Batch mode's replacement for CaptionImages + WriteCaptions; returns the run id.

    `prepared` is PrepareImages' output; its error rows (and requests too large for a file) are
    written now as errors-<run_id>-*.parquet; captions come later, from `batch collect`.
    `carried`: a resumed output's paid rows (pipeline/resume.py's CarriedRows), written now as
    captions-<run_id>-carried-*.parquet and with the errors; `journals`: the run ids whose
    journals those rows came from, deleted when the run is collected; `skipped`: the library's
    skipped-file rows ({"uri", "kind"}), counted by kind into the run's record for the summary.
    """
    run_id = config.caption.run_id
    items = prepared.images | "BuildBatchLines" >> BuildBatchLines(config.caption)
    written = items | "WriteBatchShards" >> WriteBatchShards(config.output, run_id, config.batch)
    errors = [prepared.errors, written[ERRORS]]
    if carried is not None:
        errors.append(carried.errors)
        _ = carried.captions | "WriteCarriedParquet" >> beam.io.WriteToParquet(
            FileSystems.join(config.output, f"captions-{run_id}-carried"),
            captions_schema(config.caption.structured), codec="zstd",
            file_name_suffix=".parquet")
    _ = (tuple(errors) | "AllErrors" >> beam.Flatten()
         | "WriteErrorsParquet" >> beam.io.WriteToParquet(
             FileSystems.join(config.output, f"errors-{run_id}"), ERRORS_SCHEMA, codec="zstd",
             file_name_suffix=".parquet"))
    template = bs.RunRecord.for_run(config.caption, supersede, journals)
    counts = None
    if skipped is not None:
        counts = (skipped | "SkippedKinds" >> beam.Map(lambda row: row["kind"])
                  | "CountSkipped" >> beam.combiners.Count.PerElement()
                  | "SkippedByKind" >> beam.combiners.ToDict())
    return written.shards | "SubmitShards" >> SubmitShards(config.output, template, counts)
