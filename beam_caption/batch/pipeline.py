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
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_caption.batch import ledger as bs
from beam_caption.batch.api import BatchClient, open_client
from beam_caption.batch.shards import BuildBatchLines, ShardInfo, WriteBatchShards
from beam_caption.config import RunConfig
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


def submit_pending(output: str, ledger: bs.BatchLedger, run: bs.RunRecord,
                   client: BatchClient) -> int:
    """Upload and submit every shard of `run` without a batch, saving after each step.

    Returns how many batches were created now.
    """
    created = 0
    for shard in run.unsubmitted():
        if shard.file_id is None:
            shard.file_id = client.upload(bs.resolve(output, shard.path), shard.bytes,
                                          f"{run.run_id}-{shard.index:05d}.jsonl")
            shard.uploaded_at, shard.status = int(time.time()), "uploaded"
            bs.save_ledger(output, ledger)
        info = client.create_once(shard.file_id, {"beam_caption_run": run.run_id,
                                                  "beam_caption_shard": str(shard.index)},
                                  not_before=(shard.uploaded_at or 0) - 60)
        shard.batch_id, shard.status, shard.counts = info.id, info.status, info.counts
        bs.save_ledger(output, ledger)
        created += 1
        _LOG.info("shard %d/%d (%d requests, %.1f MB) submitted as %s", shard.index + 1,
                  len(run.shards), shard.lines, shard.bytes / 1e6, info.id)
    if run.state == bs.SUBMITTING and not run.unsubmitted():
        run.state = bs.SUBMITTED
        bs.save_ledger(output, ledger)
    return created


def provider_args(run: bs.RunRecord) -> dict[str, Any]:
    """open_client's provider arguments for `run` (none for OpenAI, the ledger's default)."""
    provider = run.endpoint.get("provider", "openai")
    return {} if provider == "openai" else {"provider": provider, "model": run.info["model"]}


def _submit_all(shards: list[ShardInfo], output: str, template: bs.RunRecord) -> str:
    ledger, run = record_run(output, template, shards)
    endpoint = run.endpoint
    client = open_client(endpoint["base_url"], endpoint["api_key_env"], endpoint["api_key_file"],
                         endpoint["api_key_secret"], **provider_args(run))
    submit_pending(output, ledger, run, client)
    return run.run_id


class SubmitShards(beam.PTransform):
    """ShardInfo -> the run id, once: every shard recorded, uploaded and submitted in one step."""

    def __init__(self, output: str, template: bs.RunRecord) -> None:
        super().__init__()
        self._output = output
        self._template = template

    def expand(self, shards: beam.PCollection) -> beam.PCollection:
        """A global combine to one list (shard records are small), then one sequential Map."""
        return (shards
                | "AllShards" >> beam.combiners.ToList()
                | "Submit" >> beam.Map(_submit_all, self._output, self._template))


def submit_batches(prepared: Any, config: RunConfig, supersede: tuple[str, ...] = (),
                   carried: CarriedOutputs | None = None,
                   journals: tuple[str, ...] = ()) -> beam.PCollection:
    """Batch mode's replacement for CaptionImages + WriteCaptions; returns the run id.

    `prepared` is PrepareImages' output; its error rows (and requests too large for a file) are
    written now as errors-<run_id>-*.parquet; captions come later, from `batch collect`.
    `carried`: a resumed output's paid rows (pipeline/resume.py's CarriedRows), written now as
    captions-<run_id>-carried-*.parquet and with the errors; `journals`: the run ids whose
    journals those rows came from, deleted when the run is collected.
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
    return written.shards | "SubmitShards" >> SubmitShards(config.output, template)
