"""Collect: a finished batch's output and error files -> captions and errors rows, and the summary.

Each result line is parsed with the realtime parser (`client.parse_response` on the line's
status and body), and rows are built with the realtime row builder, so batch rows have exactly the
realtime schema, with `batch = true` and cost at the price table's batch discount. Every image of
the shard's metadata sidecar gets exactly one row: images that shared a request_key share its
answer (the first pays, the others are `deduplicated`), and requests with no result line become
error rows whose code says why (batch_expired, batch_cancelled, batch_failed), which a later
`--resume` in either mode sends again.

Files are named per run and shard (captions-<run_id>-batch-<shard>.parquet), written under a
temporary name and renamed, and a shard is marked collected in batches.json only after its files
exist: collecting twice rewrites the same files and never duplicates a row.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_caption.api.errors import ApiError
from beam_caption.api.response import ChatResult, parse_response
from beam_caption.api.structured import (
    SchemaMismatch,
    parse_answer,
)
from beam_caption.batch import claims
from beam_caption.batch import ledger as bs
from beam_caption.batch.api import BatchClient
from beam_caption.batch.closing import finish_run
from beam_caption.batch.wire import BatchInfo, shard_metadata
from beam_caption.config import CaptionConfig
from beam_caption.cost.pricing import cost_usd
from beam_caption.pipeline.rows import caption_row, error_row, error_stage
from beam_caption.pipeline.schema import ERRORS_SCHEMA, captions_schema

_LOG = logging.getLogger(__name__)
Parser = Callable[..., ChatResult]
# Why a request has no answer, by the batch's final status (a result line's own code wins).
_MISSING_CODES = {"expired": "batch_expired", "cancelled": "batch_cancelled"}
_LINE_CODES = frozenset({"batch_expired", "batch_cancelled"})


def _batch_cost(config: CaptionConfig, usage: Any) -> float | None:
    return cost_usd(config.price, usage, batch=True)


def _parse_line(line: dict[str, Any] | None, status: str, batch_errors: Iterable[str],
                parse: Parser = parse_response
                ) -> ChatResult | tuple[str, str, ApiError | None]:
    """A result line -> the answer, or (code, message, the ApiError if there was a response)."""
    if line is None:
        code = _MISSING_CODES.get(status, "batch_failed")
        why = "; ".join(batch_errors) or f"the batch ended {status} without running it"
        return code, f"no result: {why}", None
    response = line.get("response")
    if not isinstance(response, dict):
        error = line.get("error") if isinstance(line.get("error"), dict) else {}
        raw_code = str(error.get("code") or "")
        code = raw_code if raw_code in _LINE_CODES else "batch_failed"
        return code, f"{raw_code or 'error'}: {error.get('message') or 'no detail'}", None
    request_id = response.get("request_id")
    headers = {"x-request-id": request_id} if isinstance(request_id, str) else {}
    body = json.dumps(response.get("body")).encode()
    status_code = response.get("status_code")
    try:
        return parse(status_code if isinstance(status_code, int) else 500, headers, body)
    except ApiError as exc:
        return exc.row_code, exc.message, exc


def _answered(line: dict[str, Any]) -> bool:
    response = line.get("response")
    return isinstance(response, dict) and response.get("status_code") == 200


def shard_rows(config: CaptionConfig, metas: list[dict[str, Any]],
               lines: Iterable[dict[str, Any]], status: str,
               batch_errors: Iterable[str] = ()) -> tuple[list[dict], list[dict]]:
    """(caption rows, error rows) for one shard: exactly one row per sidecar entry."""
    results: dict[str, dict[str, Any]] = {}
    for line in lines:
        key = line.get("custom_id")
        # A request answered in the output file and also listed in the error file: the answer
        # wins (it was paid for).
        if isinstance(key, str) and (key not in results or _answered(line)):
            results[key] = line
    by_key: dict[str, list[dict[str, Any]]] = {}
    for meta in metas:
        by_key.setdefault(meta["request_key"], []).append(meta)
    captions: list[dict] = []
    errors: list[dict] = []
    batch_errors = tuple(batch_errors)
    parse = config.endpoint.adapter.parse_response  # each provider's answers, its own parser
    for key, group in by_key.items():
        parsed = _parse_line(results.get(key), status, batch_errors, parse)
        payer = group[0]["uri"]
        for i, meta in enumerate(group):
            row = (_caption(config, key, meta, parsed, payer=None if i == 0 else payer)
                   if isinstance(parsed, ChatResult)
                   else _error(config, key, meta, *parsed, first=i == 0))
            (errors if "stage" in row else captions).append(row)
    return captions, errors


def _caption(config: CaptionConfig, key: str, meta: dict[str, Any], result: ChatResult, *,
             payer: str | None) -> dict[str, Any]:
    """A caption row; `payer` is the uri whose request paid when this image shares its answer."""
    row = caption_row(meta, request_key=key, result=result, model=config.request.model,
                      run_id=config.run_id, cost_usd=_batch_cost(config, result.usage),
                      estimated_prompt_tokens=meta["estimated_prompt_tokens"] or 0,
                      attempts=0 if payer else 1, latency_ms=None, batch=True,
                      deduplicated_from=payer)
    if config.structured is not None:
        try:
            row.update(parse_answer(row["caption"] or "", config.structured))
        except SchemaMismatch as exc:
            return _error(config, key, meta, "schema_mismatch", str(exc), None,
                          first=payer is None, cost=row["cost_usd"])
    return row


def _error(config: CaptionConfig, key: str, meta: dict[str, Any], code: str, message: str,
           api_error: ApiError | None, *, first: bool,
           cost: float | None = None) -> dict[str, Any]:
    if api_error is not None and cost is None and first:
        cost = _batch_cost(config, api_error.usage)  # a billed answer (content filter)
    return error_row(uri=meta["uri"], image_id=meta["image_id"], stage=error_stage(code),
                     code=code, message=message, attempts=1 if first else 0, request_key=key,
                     run_id=config.run_id, cost_usd=cost if first else None,
                     source_key=meta.get("source_key"))


def _write_parquet(path: str, rows: list[dict], schema: pa.Schema) -> None:
    """Write under a name no reader globs, then rename: readers never see half a file."""
    temporary = path.rsplit("/", 1)[0] + "/tmp-" + path.rsplit("/", 1)[-1]
    with FileSystems.create(temporary) as handle:
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), handle, compression="zstd")
    FileSystems.rename([temporary], [path])


def _read_meta(output: str, shard: bs.ShardRecord) -> list[dict[str, Any]]:
    with FileSystems.open(bs.resolve(output, shard.meta)) as handle:
        return pq.read_table(handle).to_pylist()


def collect_shard(output: str, run: bs.RunRecord, shard: bs.ShardRecord,
                  info: BatchInfo | None, client: BatchClient | None) -> tuple[int, int]:
    """Write one finished shard's rows; returns (captions, errors). `info` None: never sent."""
    config = run.caption_config()
    lines: list[dict[str, Any]] = []
    if info is not None and client is not None:
        for file_id in (info.output_file_id, info.error_file_id):
            if file_id:
                lines.extend(client.download(file_id))
    status = info.status if info is not None else "cancelled"
    errors_text = info.errors if info is not None else ("cancelled before submission",)
    captions, errors = shard_rows(config, _read_meta(output, shard), lines, status, errors_text)
    spec = config.structured
    name = f"{run.run_id}-batch-{shard.index:05d}.parquet"
    if captions:
        _write_parquet(FileSystems.join(output, f"captions-{name}"), captions,
                       captions_schema(spec))
    if errors:
        _write_parquet(FileSystems.join(output, f"errors-{name}"), errors, ERRORS_SCHEMA)
    return len(captions), len(errors)


def note_status(shard: bs.ShardRecord, info: BatchInfo) -> bool:
    """Copy a batch's status into its shard record; True if anything changed."""
    before = (shard.status, shard.counts)
    shard.status, shard.counts = info.status, info.counts
    shard.output_file_id, shard.error_file_id = info.output_file_id, info.error_file_id
    shard.errors = list(info.errors)
    return before != (shard.status, shard.counts)


def _cancelled_unsent(output: str, ledger: bs.BatchLedger, run: bs.RunRecord,
                      shard: bs.ShardRecord, client: BatchClient) -> bool:
    """True when a cancelled shard without a batch id surely has no batch, so its requests
    are `batch_cancelled` rows. A cancel can come while a submitter is creating its batch: while
    that submitter lives, the shard waits (its batch id is on its way); if it died, the provider
    is asked for the batch (OpenAI by file, Gemini by name; found: recorded and cancelled,
    collected once it ends); Anthropic cannot be asked, so the batch to look for is named."""
    claim = claims.active_claim(shard)
    if claim is None:
        return True
    if claims.claim_alive(claim) and not claim.get("unresolved"):
        return False
    if client.finds_batches:
        found = shard.file_id and client.find_created(
            shard.file_id, shard_metadata(run.run_id, shard.index), (shard.uploaded_at or 0) - 60)
        if not found:
            return True
        shard.batch_id, shard.claim = found.id, None
        note_status(shard, client.cancel(found.id))
        bs.save_ledger(output, ledger)
        return False
    _LOG.warning("shard %d of run %s was cancelled while its batch was being created, and its "
                 "provider cannot be asked whether it was: if a batch named beam-caption-%s-%d "
                 "exists in its console, its answers are not in these tables", shard.index + 1,
                 run.run_id, run.run_id, shard.index)
    return True


def collect_run(output: str, ledger: bs.BatchLedger, run: bs.RunRecord,
                client: BatchClient) -> dict[str, Any] | None:
    """Collect every finished, uncollected shard of `run`; the summary once all are collected.

    Shards still running, and shards never submitted, are left for later (None is returned).
    """
    for shard in run.shards:
        if shard.collected:
            continue
        info = None
        if shard.batch_id is not None:
            info = client.get(shard.batch_id)
            if note_status(shard, info):
                bs.save_ledger(output, ledger)
            if not info.terminal:
                continue
        elif not shard.cancel_requested:
            continue  # not submitted yet: `beam-caption batch submit` sends it
        elif not _cancelled_unsent(output, ledger, run, shard, client):
            continue  # its batch may exist: collected once its submitter is done with it
        captions, errors = collect_shard(output, run, shard, info, client)
        shard.collected = True
        bs.save_ledger(output, ledger)
        _LOG.info("shard %d/%d (%s, %s): %d caption rows, %d error rows", shard.index + 1,
                  len(run.shards), shard.batch_id or "never submitted", shard.status, captions,
                  errors)
    if all(s.collected for s in run.shards):
        return finish_run(output, ledger, run)
    return None
