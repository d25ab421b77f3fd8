"""CaptionImages: PreparedImage -> caption rows, with a tagged `errors` output of error rows.

Public and composable, the way RunInference is used:

    prepared = refs | PrepareImages(prepare_settings, fetch_settings, run_id=...)
    captioned = prepared.images | CaptionImages(caption_config)
    captioned.captions, captioned.errors    # dict rows, schemas in pipeline/schema.py

Each answer's row is built and journaled (journal.py) on the engine's loop the moment the answer
arrives, before the DoFn sees it: an answer is persisted within seconds by the process that paid
for it, whatever happens to the bundle afterwards.
"""

from __future__ import annotations

import concurrent.futures
import functools
import json
import logging
import queue
import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import GlobalWindows

from beam_caption.api.structured import SchemaMismatch, parse_answer
from beam_caption.config import CaptionConfig
from beam_caption.engine import metrics as m
from beam_caption.engine.engine import AsyncEngine
from beam_caption.engine.jobs import CaptionJob, CaptionOutcome
from beam_caption.engine.registry import acquire_engine, release_engine
from beam_caption.engine.run_state import RunState, run_state
from beam_caption.inputs.images import PreparedImage
from beam_caption.pipeline import rows
from beam_caption.pipeline.journal import CAPTIONS, AnswerJournal, process_journal
from beam_caption.pipeline.journal import ERRORS as ERRORS_TABLE
from beam_caption.pipeline.prepare import ERRORS

_LOG = logging.getLogger(__name__)
# How often a feeding thread blocked on a full window looks whether the window grew.
_RECHECK_S = 0.1
_FLUSH_EVERY_S = 0.5
Tagged = tuple[str | None, dict[str, Any]]  # (None | ERRORS, row)


class CaptionOutputs(NamedTuple):
    """CaptionImages' outputs: caption rows and error rows."""

    captions: beam.PCollection
    errors: beam.PCollection


def caption_job(config: CaptionConfig, run: RunState, image: PreparedImage) -> CaptionJob:
    """The engine job for one image, built from its own transform's settings."""
    built = config.image_request(image)  # a video: its keyframes, one request
    endpoint = config.endpoint
    request = endpoint.adapter.build_request(config.request, built.images, built.prompt)
    body = json.dumps(request).encode("utf-8")
    return CaptionJob(
        key=built.key, uri=image.uri, body=body,
        estimated_prompt_tokens=built.estimated_prompt_tokens,
        max_output_tokens=config.request.max_output_tokens, price=config.price, run=run,
        dedupe=config.dedupe, url=endpoint.request_url(config.request.model),
        source_id=image.source_id)


def outcome_row(config: CaptionConfig, image: PreparedImage, job: CaptionJob,
                outcome: CaptionOutcome) -> Tagged:
    """The row an outcome becomes: (None, caption row) or (ERRORS, error row)."""
    source_key = config.source_key(image.uri, image.version, image.prompt)

    def error(stage: str, code: str, message: str, cost: float | None = None) -> Tagged:
        return ERRORS, rows.error_row(uri=image.uri, image_id=image.image_id, stage=stage,
                                      code=code, message=message, attempts=outcome.attempts,
                                      request_key=job.key, run_id=config.run_id, cost_usd=cost,
                                      source_key=source_key)

    if outcome.stopped is not None and outcome.result is None:
        reason = outcome.stopped
        if outcome.abandoned:
            return error(reason.stage, reason.code,
                         f"no answer: in flight when the run stopped ({reason.message})")
        return error(reason.stage, reason.code, f"not sent: {reason.message}")
    if outcome.result is None:
        err = outcome.error
        code = err.row_code if err is not None else "internal_error"
        return error(rows.error_stage(code), code, str(err), outcome.cost_usd)
    row = rows.caption_row(
        {**vars(image), "source_key": source_key}, request_key=job.key, result=outcome.result,
        model=config.request.model, run_id=config.run_id, cost_usd=outcome.cost_usd,
        estimated_prompt_tokens=job.estimated_prompt_tokens, attempts=outcome.attempts,
        latency_ms=outcome.latency_ms, deduplicated_from=outcome.shared_from)
    if config.structured is not None:
        try:
            row.update(parse_answer(row["caption"] or "", config.structured))
        except SchemaMismatch as exc:
            return error("response", "schema_mismatch", str(exc), row["cost_usd"])
    return None, row


class _CaptionDoFn(beam.DoFn):
    """Hands images to the per-process engine; emits rows as answers complete (backpressure)."""

    def __init__(self, config: CaptionConfig) -> None:
        self._config = config
        self._engine: AsyncEngine | None = None
        self._run: RunState | None = None
        self._journal: AnswerJournal | None = None
        self._pending: dict[concurrent.futures.Future[Tagged], PreparedImage] = {}
        # Futures put here by the engine loop as they complete: finding them costs O(1) per
        # image, where scanning (or concurrent.futures.wait on) every pending future cost
        # O(window) (~50 us per image at 180 pending, ~160 us at 600).
        self._done: queue.SimpleQueue[concurrent.futures.Future[Tagged]] | None = None
        # What this thread spent on its last image outside our waits for a slot: reported to the
        # engine, which sizes its window from it (engine/window.py).
        self._entered: float | None = None
        self._waited = 0.0
        self._flushed_at = 0.0
        counter = beam.metrics.Metrics.counter
        self._captioned = counter(m.NAMESPACE, m.IMAGES_CAPTIONED)
        self._failed = counter(m.NAMESPACE, m.IMAGES_FAILED)
        self._cost = counter(m.NAMESPACE, m.COST_MICRO_USD)

    def setup(self) -> None:
        """Join (or start) this process's engine, and its state for the run."""
        config = self._config
        self._engine = acquire_engine(config.endpoint, config.limits, config.engine_key())
        self._run = run_state(self._config.run_settings())
        journal_dir = self._config.journal_dir
        self._journal = process_journal(journal_dir) if journal_dir else None

    def start_bundle(self) -> None:
        """A bundle starts with nothing in flight."""
        self._pending = {}
        self._done = queue.SimpleQueue()
        self._entered = None

    def process(self, image: PreparedImage) -> Iterator[Any]:
        """Submit one image; yield the rows of whatever has completed meanwhile."""
        assert self._engine is not None and self._run is not None
        now = time.monotonic()
        if self._entered is not None:
            # Reading and preparing this image, writing the last one's rows: the feed's pace.
            self._engine.note_feed(id(self), now - self._entered - self._waited)
        self._entered, self._waited = now, 0.0
        job = caption_job(self._config, self._run, image)
        finish = functools.partial(self._finish, image, job)
        future = self._engine.submit(job, finish)
        self._pending[future] = image
        assert self._done is not None
        future.add_done_callback(self._done.put)
        # Enough queued work to keep every slot busy while this thread prepares the next
        # image; more would only hold images in memory.
        yield from self._completed(block=len(self._pending) >= 2 * self._engine.window())

    def finish_bundle(self) -> Iterator[Any]:
        """Wait for every request of the bundle: a bundle never ends with requests in flight."""
        concurrent.futures.wait(self._pending)
        assert self._run is not None
        self._run.progress.flush()
        if self._journal is not None:
            self._journal.flush()
        at_end = GlobalWindows.windowed_value_at_end_of_window
        # Every future is done, but a future's callbacks run after its waiters wake: some may
        # not be in the queue yet, so the rest of the bundle is taken from _pending itself.
        for row in self._completed(block=False, final=True):
            if isinstance(row, TaggedOutput):
                yield TaggedOutput(row.tag, at_end(row.value))
            else:
                yield at_end(row)

    def teardown(self) -> None:
        """Leave the engine; the last DoFn in the process closes its session."""
        if self._engine is not None:
            m.flush_to_beam(self._engine.metrics)
            release_engine(self._config.engine_key())
            self._engine = None
        if self._journal is not None:
            self._journal.flush()

    def _finish(self, image: PreparedImage, job: CaptionJob, outcome: CaptionOutcome) -> Tagged:
        """On the engine loop, as the answer arrives: build the row, journal it if paid for."""
        tag, row = outcome_row(self._config, image, job, outcome)
        if self._journal is not None and outcome.carries_answer and not outcome.redelivered:
            self._journal.append(CAPTIONS if tag is None else ERRORS_TABLE, row)
        return tag, row

    def _completed(self, *, block: bool, final: bool = False) -> Iterator[Any]:
        """The rows of the futures that completed (all of them when `final`); with `block`,
        wait for one first, or until the window grew (engine/window.py grows it while the
        first answers are on their way), looking again every _RECHECK_S."""
        assert self._engine is not None and self._done is not None
        ready: list[concurrent.futures.Future[Tagged]] = []
        if block:
            started = time.monotonic()
            while len(self._pending) >= 2 * self._engine.window():
                try:
                    ready.append(self._done.get(timeout=_RECHECK_S))
                    break
                except queue.Empty:
                    continue
            self._waited += time.monotonic() - started
        if final:
            ready = list(self._pending)
        else:
            while True:
                try:
                    ready.append(self._done.get_nowait())
                except queue.Empty:
                    break
        for future in ready:
            image = self._pending.pop(future, None)
            if image is not None:  # not emitted yet
                yield self._emit(future, image)
        now = time.monotonic()
        if final or now - self._flushed_at >= _FLUSH_EVERY_S:
            # The engine's counters go to Beam a few times a second, and always at the end of
            # a bundle (flushing each image's took more CPU than the counting).
            self._flushed_at = now
            m.flush_to_beam(self._engine.metrics)

    def _emit(self, future: concurrent.futures.Future[Tagged], image: PreparedImage) -> Any:
        try:
            tag, row = future.result()
        except Exception as exc:  # a bug, not a request failure: the image still gets its row
            _LOG.exception("engine failure on %s", image.uri)
            self._failed.inc()
            return TaggedOutput(ERRORS, rows.error_row(
                uri=image.uri, image_id=image.image_id, stage="internal", code="internal_error",
                message=f"{type(exc).__name__}: {exc}", run_id=self._config.run_id))
        if tag is not None:
            self._failed.inc()
            return TaggedOutput(tag, row)
        self._captioned.inc()
        if row["cost_usd"] and not row["deduplicated"]:
            self._cost.inc(round(row["cost_usd"] * 1e6))
        return row


class CaptionImages(beam.PTransform):
    """PreparedImage -> caption rows, with an `errors` output of error rows.

    `checkpoint` (default True) puts a Reshuffle after the paid calls: on a runner that fuses
    steps and retries failed bundles (Dataflow, Flink, Spark), a failure in a later step (a
    Parquet write) then retries from the checkpoint and never calls the model again. Local
    FnApiRunner runs do not retry bundles, so `beam-caption run` turns it off there.
    """

    def __init__(self, config: CaptionConfig, *, checkpoint: bool = True) -> None:
        super().__init__()
        self._config = config
        self._checkpoint = checkpoint

    def expand(self, images: beam.PCollection) -> CaptionOutputs:
        """Apply the batching caption DoFn (and the checkpoint)."""
        result = images | "Caption" >> beam.ParDo(_CaptionDoFn(self._config)).with_outputs(
            ERRORS, main="captions")
        captions, errors = result.captions, result[ERRORS]
        if self._checkpoint:
            captions = captions | "CheckpointCaptions" >> beam.Reshuffle()
            errors = errors | "CheckpointErrors" >> beam.Reshuffle()
        return CaptionOutputs(captions, errors)
