"""The pipeline's PTransforms: PrepareImages and CaptionImages, each with a tagged `errors` output.

CaptionImages is public and composable, the way RunInference is used:

    prepared = refs | PrepareImages(prepare_settings, fetch_settings, run_id=...)
    captioned = prepared.images | CaptionImages(caption_config)
    captioned.captions, captioned.errors    # dict rows, schemas in beam_caption.schema
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Iterator
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import GlobalWindows

from beam_caption import metrics as m
from beam_caption import tokens
from beam_caption.client import ApiError, request_key
from beam_caption.config import CaptionConfig
from beam_caption.engine import AsyncEngine, CaptionJob, CaptionOutcome
from beam_caption.engine_registry import acquire_engine, find_engine, release_engine
from beam_caption.fetch import FetchSettings, close_fetchers, read_image_bytes
from beam_caption.images import ImageError, PreparedImage, PrepareSettings, prepare_image
from beam_caption.progress import process_progress
from beam_caption.schema import error_row, utc_now
from beam_caption.sources import ImageRef
from beam_caption.structured import SchemaMismatch, parse_answer

_LOG = logging.getLogger(__name__)
ERRORS = "errors"


class PreparedOutputs(NamedTuple):
    """PrepareImages' outputs: prepared images and error rows."""

    images: beam.PCollection
    errors: beam.PCollection


class CaptionOutputs(NamedTuple):
    """CaptionImages' outputs: caption rows and error rows."""

    captions: beam.PCollection
    errors: beam.PCollection


class _PrepareImageDoFn(beam.DoFn):
    """Read, hash, decode, orient, shrink and re-encode one image; failures become error rows."""

    def __init__(self, prepare: PrepareSettings, fetch: FetchSettings, run_id: str,
                 caption: CaptionConfig | None = None) -> None:
        self._prepare = prepare
        self._fetch = fetch
        self._run_id = run_id
        self._caption = caption
        self._prepared = beam.metrics.Metrics.counter(m.NAMESPACE, m.IMAGES_PREPARED)

    def process(self, ref: ImageRef) -> Iterator[Any]:
        """Yield a PreparedImage, or an errors row tagged ERRORS."""
        stopped = self._engine_stop()
        if stopped is not None:
            # The engine in this process stopped sending: preparing would only burn CPU and I/O.
            self._count_failure()
            yield TaggedOutput(ERRORS, error_row(uri=ref.uri, stage=stopped.stage,
                                                 code=stopped.code, run_id=self._run_id,
                                                 message=f"not sent: {stopped.message}"))
            return
        try:
            data = read_image_bytes(ref.uri, self._fetch)
            image = prepare_image(ref.uri, data, self._prepare, source_id=ref.source_id,
                                  prompt=ref.prompt)
        except ImageError as exc:
            self._count_failure()
            yield TaggedOutput(ERRORS, error_row(uri=ref.uri, stage=exc.stage, code=exc.code,
                                                 message=exc.message, run_id=self._run_id))
            return
        except Exception as exc:
            _LOG.exception("unexpected failure preparing %s", ref.uri)
            self._count_failure()
            yield TaggedOutput(ERRORS, error_row(uri=ref.uri, stage="internal",
                                                 code="internal_error", run_id=self._run_id,
                                                 message=f"{type(exc).__name__}: {exc}"))
            return
        self._prepared.inc()
        yield image

    def teardown(self) -> None:
        """Close this process's download sessions (re-created if another DoFn needs them)."""
        close_fetchers()

    def _count_failure(self) -> None:
        if self._caption is not None:
            process_progress(self._caption.progress_settings).record(ok=False)

    def _engine_stop(self) -> Any:
        if self._caption is None:
            return None
        engine = find_engine(self._caption)
        return engine.stopped if engine is not None else None


class PrepareImages(beam.PTransform):
    """ImageRef -> PreparedImage, with an `errors` output of error rows."""

    def __init__(self, prepare: PrepareSettings, fetch: FetchSettings, *, run_id: str = "",
                 caption: CaptionConfig | None = None) -> None:
        super().__init__()
        self._fn = _PrepareImageDoFn(prepare, fetch, run_id, caption)

    def expand(self, refs: beam.PCollection) -> PreparedOutputs:
        """Apply the preparation DoFn."""
        result = refs | "Prepare" >> beam.ParDo(self._fn).with_outputs(ERRORS, main="images")
        return PreparedOutputs(result.images, result[ERRORS])


def request_params(config: CaptionConfig, prompt: str | None) -> dict[str, Any]:
    """Everything that changes the answer besides the image bytes: hashed into request_key."""
    return {**config.request.key_params(prompt), "max_side": config.prepare.max_side,
            "jpeg_quality": config.prepare.jpeg_quality}


def estimate_prompt_tokens(config: CaptionConfig, image: PreparedImage) -> int:
    """Prompt tokens this image's request should cost, by the published rules."""
    req = config.request
    texts = [t for t in (req.system_prompt, config.prompt_for(image.prompt) or req.prompt) if t]
    rule = config.price.image_tokens if config.price else None
    return tokens.prompt_tokens(rule, texts, len(texts), [(image.sent_width, image.sent_height)],
                                req.detail)


class _CaptionDoFn(beam.DoFn):
    """Hands images to the per-process engine; emits rows as answers complete (backpressure)."""

    def __init__(self, config: CaptionConfig) -> None:
        self._config = config
        self._engine: AsyncEngine | None = None
        self._pending: list[tuple[concurrent.futures.Future[CaptionOutcome], CaptionJob]] = []
        # Enough queued work to keep every slot busy while this thread emits rows; more would only
        # hold images in memory.
        self._max_pending = 2 * config.limits.concurrency

    def setup(self) -> None:
        """Join (or start) this process's engine."""
        self._engine = acquire_engine(self._config)

    def start_bundle(self) -> None:
        """A bundle starts with nothing in flight."""
        self._pending = []

    def process(self, image: PreparedImage) -> Iterator[Any]:
        """Submit one image; yield the rows of whatever has completed meanwhile."""
        assert self._engine is not None
        prompt = self._config.prompt_for(image.prompt)
        job = CaptionJob(image=image,
                         request_key=request_key(image.image_id, request_params(self._config,
                                                                                prompt)),
                         estimated_prompt_tokens=estimate_prompt_tokens(self._config, image),
                         prompt=prompt)
        self._pending.append((self._engine.submit(job), job))
        block = len(self._pending) >= self._max_pending
        yield from self._completed(block=block)

    def finish_bundle(self) -> Iterator[Any]:
        """Wait for every request of the bundle: a bundle never ends with requests in flight."""
        concurrent.futures.wait([f for f, _ in self._pending])
        assert self._engine is not None
        self._engine.progress.flush()
        at_end = GlobalWindows.windowed_value_at_end_of_window
        for row in self._completed(block=False):
            if isinstance(row, TaggedOutput):
                yield TaggedOutput(row.tag, at_end(row.value))
            else:
                yield at_end(row)

    def teardown(self) -> None:
        """Leave the engine; the last DoFn in the process closes it."""
        if self._engine is not None:
            m.flush_to_beam(self._engine.metrics)
            release_engine(self._engine)
            self._engine = None

    def _completed(self, *, block: bool) -> Iterator[Any]:
        if block:
            concurrent.futures.wait([f for f, _ in self._pending],
                                    return_when=concurrent.futures.FIRST_COMPLETED)
        still: list[tuple[concurrent.futures.Future[CaptionOutcome], CaptionJob]] = []
        for future, job in self._pending:
            if future.done():
                yield self._row(job, future)
            else:
                still.append((future, job))
        self._pending = still
        assert self._engine is not None
        m.flush_to_beam(self._engine.metrics)

    def _row(self, job: CaptionJob, future: concurrent.futures.Future[CaptionOutcome]) -> Any:
        image, run_id = job.image, self._config.run_id
        try:
            outcome = future.result()
        except Exception as exc:
            _LOG.exception("engine failure on %s", image.uri)
            return self._error(job, "internal", "internal_error", f"{type(exc).__name__}: {exc}", 0)
        if outcome.stopped is not None:
            return self._error(job, outcome.stopped.stage, outcome.stopped.code,
                               f"not sent: {outcome.stopped.message}", outcome.attempts)
        if outcome.result is None:
            error = outcome.error
            code = error.row_code if isinstance(error, ApiError) else "internal_error"
            stage = "response" if code in ("content_filter", "bad_response") else "request"
            usage = getattr(error, "usage", None)
            cost = _cost(self._config, usage) if usage is not None else None
            return self._error(job, stage, code, str(error), outcome.attempts, cost)
        row = caption_row(self._config, job, outcome, run_id)
        spec = self._config.structured
        if spec is not None:
            try:
                row.update(parse_answer(row["caption"] or "", spec))
            except SchemaMismatch as exc:
                return self._error(job, "response", "schema_mismatch", str(exc),
                                   outcome.attempts, row["cost_usd"])
        return row

    def _error(self, job: CaptionJob, stage: str, code: str, message: str, attempts: int,
               cost_usd: float | None = None) -> Any:
        beam.metrics.Metrics.counter(m.NAMESPACE, m.IMAGES_FAILED).inc()
        return TaggedOutput(ERRORS, error_row(
            uri=job.image.uri, image_id=job.image.image_id, stage=stage, code=code,
            message=message, attempts=attempts, request_key=job.request_key,
            run_id=self._config.run_id, cost_usd=cost_usd))


def _cost(config: CaptionConfig, usage: Any) -> float | None:
    if config.price is None:
        return None
    return config.price.cost_usd(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)


def caption_row(config: CaptionConfig, job: CaptionJob, outcome: CaptionOutcome,
                run_id: str) -> dict[str, Any]:
    """One captions-table row from a successful outcome."""
    result, image = outcome.result, job.image
    assert result is not None
    usage = result.usage
    cost = _cost(config, usage)
    if cost is not None and outcome.deduplicated:
        cost = 0.0
    beam.metrics.Metrics.counter(m.NAMESPACE, m.IMAGES_CAPTIONED).inc()
    if cost:
        beam.metrics.Metrics.counter(m.NAMESPACE, m.COST_MICRO_USD).inc(round(cost * 1e6))
    return {
        "image_id": image.image_id, "uri": image.uri, "source_id": image.source_id,
        "caption": result.caption, "model": result.model or config.request.model,
        "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
        "cached_tokens": usage.cached_tokens, "reasoning_tokens": usage.reasoning_tokens,
        "total_tokens": usage.total_tokens,
        "estimated_prompt_tokens": job.estimated_prompt_tokens, "cost_usd": cost,
        "batch": False, "deduplicated": outcome.deduplicated,
        "width": image.width, "height": image.height, "sent_width": image.sent_width,
        "sent_height": image.sent_height, "bytes": image.bytes,
        "finish_reason": result.finish_reason, "request_id": result.request_id,
        "attempts": outcome.attempts, "latency_ms": outcome.latency_ms,
        "request_key": job.request_key, "run_id": run_id, "created_at": utc_now(),
    }


class CaptionImages(beam.PTransform):
    """PreparedImage -> caption rows, with an `errors` output of error rows."""

    def __init__(self, config: CaptionConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, images: beam.PCollection) -> CaptionOutputs:
        """Apply the batching caption DoFn."""
        result = images | "Caption" >> beam.ParDo(_CaptionDoFn(self._config)).with_outputs(
            ERRORS, main="captions")
        return CaptionOutputs(result.captions, result[ERRORS])
