"""Closing a collected batch-mode run: its run-summary.json (this run's rows, with what the same
answers would have cost in realtime), the error files it supersedes and its spent request files
deleted, the journals it carried deleted, and the run marked collected in batches.json."""

from __future__ import annotations

from typing import Any

import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from beam_caption.batch import ledger as bs
from beam_caption.pipeline.journal import delete_journals
from beam_caption.pipeline.summary import SummaryFn, summary_document, write_summary


def _run_files(output: str, table: str, run_id: str) -> list[str]:
    pattern = FileSystems.join(output, f"{table}-{run_id}-*.parquet")
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


def _tally(output: str, run_id: str) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The summary tally of the run's files, and the files; `realtime_usd` in the tally is what
    rows paid at realtime prices (carried over from an interrupted realtime run)."""
    fn = SummaryFn(run_id)
    acc = fn.create_accumulator()
    realtime_usd = 0.0
    files: dict[str, list[str]] = {}
    for table, kind in (("captions", "caption"), ("errors", "error")):
        files[table] = _run_files(output, table, run_id)
        for path in files[table]:
            with FileSystems.open(path) as handle:
                for row in pq.read_table(handle).to_pylist():
                    acc = fn.add_input(acc, (kind, row))
                    if not row.get("batch") and not row.get("deduplicated"):
                        realtime_usd += row.get("cost_usd") or 0.0
    acc["realtime_usd"] = realtime_usd
    return acc, files


def write_batch_summary(output: str, run: bs.RunRecord) -> dict[str, Any]:
    """run-summary.json for a collected run: the realtime fields over this run's rows, plus
    `mode` and a `batch` block with what the same answers would have cost in realtime."""
    acc, files = _tally(output, run.run_id)
    summary = summary_document(acc)
    summary["skipped"] = dict(run.skipped)  # counted when the shards were written
    summary["mean_latency_ms"] = None  # a batch's requests have no latency of their own
    cost = summary["cost_usd"]
    price = run.price or {}
    discount = price.get("batch_discount") or 0
    carried = acc["realtime_usd"]  # already at realtime prices: not divided by the discount
    realtime = (round((cost - carried) / discount + carried, 8)
                if cost is not None and discount else None)
    by_status: dict[str, int] = {}
    for shard in run.shards:
        by_status[shard.status] = by_status.get(shard.status, 0) + 1
    document = {**run.info, **summary, "mode": "batch",
                "batch": {"batches": sum(1 for s in run.shards if s.batch_id),
                          "by_status": dict(sorted(by_status.items())),
                          "requests": sum(s.lines for s in run.shards),
                          "cost_usd_at_realtime_prices": realtime,
                          "saved_usd": (round(realtime - cost, 8)
                                        if realtime is not None and cost is not None else None)},
                "files": {t: [p.rsplit("/", 1)[-1] for p in paths] for t, paths in files.items()}}
    write_summary(output, document)
    return document


def finish_run(output: str, ledger: bs.BatchLedger, run: bs.RunRecord) -> dict[str, Any]:
    """Once every shard is collected: the summary, superseded error files gone, run closed."""
    summary = write_batch_summary(output, run)
    stale = [p for p in run.supersede if FileSystems.exists(p)]
    if stale:
        FileSystems.delete(stale)
    if run.journals:  # their answers are in this run's Parquet now
        delete_journals(output, run.journals)
    inputs = [bs.resolve(output, s.path) for s in run.shards]
    gone = [p for p in inputs if FileSystems.exists(p)]
    if gone:
        # The request files hold every image in base64: as large as the photos, and spent.
        FileSystems.delete(gone)
    run.state = bs.COLLECTED
    bs.save_ledger(output, ledger)
    return summary
