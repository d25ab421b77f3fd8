"""PrepareImages: ImageRef -> PreparedImage (read, hash, decode, orient, shrink, re-encode), with
a tagged `errors` output of error rows.

Local, gs:// and s3:// files are read and prepared one after another on the DoFn's thread (the
work is CPU). https:// images are downloads, mostly waiting: each DoFn keeps up to
`MAX_DOWNLOADS` of them in flight on the process's download session and prepares each as it
lands, so a list of URLs is not fetched one at a time.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Iterator
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import GlobalWindows

from beam_caption.engine import metrics as m
from beam_caption.engine.progress import ProgressSettings, process_progress
from beam_caption.engine.run_state import stop_reason
from beam_caption.inputs.fetch import FetchSettings, ImageReader, is_url
from beam_caption.inputs.images import ImageError, PrepareSettings, prepare_image
from beam_caption.inputs.kinds import VIDEO, kind_of
from beam_caption.inputs.refs import BAD_FILE_NAME
from beam_caption.inputs.sources import ImageRef
from beam_caption.inputs.video import prepare_video_uri
from beam_caption.pipeline import rows

_LOG = logging.getLogger(__name__)
ERRORS = "errors"
MAX_DOWNLOADS = 16  # https:// downloads in flight per DoFn


class PreparedOutputs(NamedTuple):
    """PrepareImages' outputs: prepared images and error rows."""

    images: beam.PCollection
    errors: beam.PCollection


class _PrepareImageDoFn(beam.DoFn):
    """Read, hash, decode, orient, shrink and re-encode one image; failures become error rows."""

    def __init__(self, prepare: PrepareSettings, fetch: FetchSettings, run_id: str,
                 progress: ProgressSettings | None) -> None:
        self._prepare = prepare
        self._fetch = fetch
        self._run_id = run_id
        self._progress = progress
        self._reader: ImageReader | None = None
        self._downloads: dict[concurrent.futures.Future[bytes], ImageRef] = {}
        self._prepared = beam.metrics.Metrics.counter(m.NAMESPACE, m.IMAGES_PREPARED)

    def setup(self) -> None:
        """Borrow the process's download session (opened at the first URL)."""
        self._reader = ImageReader(self._fetch)

    def start_bundle(self) -> None:
        """A bundle starts with no download in flight."""
        self._downloads = {}

    def process(self, ref: ImageRef) -> Iterator[Any]:
        """Yield a PreparedImage, or an errors row tagged ERRORS (now, or when downloaded)."""
        assert self._reader is not None
        stopped = stop_reason(self._run_id) if self._run_id else None
        if stopped is not None:
            # This process stopped sending for the run: preparing would only burn CPU and I/O.
            yield self._failed(ref, stopped.stage, stopped.code, f"not sent: {stopped.message}")
            return
        if ref.problem is not None:
            code = ref.problem_code
            yield self._failed(ref, "read", code, ref.problem if code == BAD_FILE_NAME
                               else f"manifest row skipped: {ref.problem}")
            return
        if is_url(ref.uri):
            self._downloads[self._reader.submit(ref.uri)] = ref
            yield from self._downloaded(block=len(self._downloads) >= MAX_DOWNLOADS)
            return
        yield self._prepared_or_error(ref, lambda: self._reader.read(ref.uri))

    def finish_bundle(self) -> Iterator[Any]:
        """Prepare every download of the bundle: none is left in flight."""
        concurrent.futures.wait(self._downloads)
        at_end = GlobalWindows.windowed_value_at_end_of_window
        for out in self._downloaded(block=False):
            yield TaggedOutput(out.tag, at_end(out.value)) if isinstance(
                out, TaggedOutput) else at_end(out)

    def teardown(self) -> None:
        """Give the download session back (the last holder in the process closes it)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _downloaded(self, *, block: bool) -> Iterator[Any]:
        if block:
            concurrent.futures.wait(self._downloads,
                                    return_when=concurrent.futures.FIRST_COMPLETED)
        for future in [f for f in self._downloads if f.done()]:
            ref = self._downloads.pop(future)
            yield self._prepared_or_error(ref, future.result)

    def _prepared_or_error(self, ref: ImageRef, read: Any) -> Any:
        try:
            if kind_of(ref.uri) == VIDEO:
                # Streamed from its filesystem (a video may be GBs); a URL's download is bytes.
                image = prepare_video_uri(ref.uri, self._prepare,
                                          data=read() if is_url(ref.uri) else None,
                                          source_id=ref.source_id, prompt=ref.prompt,
                                          version=ref.version, sidecar=ref.meta)
            else:
                image = prepare_image(ref.uri, read(), self._prepare, source_id=ref.source_id,
                                      prompt=ref.prompt, version=ref.version, sidecar=ref.meta)
        except ImageError as exc:
            return self._failed(ref, exc.stage, exc.code, exc.message)
        except Exception as exc:
            _LOG.exception("unexpected failure preparing %s", ref.uri)
            return self._failed(ref, "internal", "internal_error", f"{type(exc).__name__}: {exc}")
        self._prepared.inc()
        return image

    def _failed(self, ref: ImageRef, stage: str, code: str, message: str) -> TaggedOutput:
        if self._progress is not None:
            process_progress(self._progress).record(ok=False)
        return TaggedOutput(ERRORS, rows.error_row(uri=ref.uri, stage=stage, code=code,
                                                   message=message, run_id=self._run_id))


class PrepareImages(beam.PTransform):
    """ImageRef -> PreparedImage, with an `errors` output of error rows.

    `run_id`: images of a run that stopped sending in this worker process are not read (they
    become error rows with the stop's code); `progress`: count failures in the run's progress.
    """

    def __init__(self, prepare: PrepareSettings, fetch: FetchSettings, *, run_id: str = "",
                 progress: ProgressSettings | None = None) -> None:
        super().__init__()
        self._fn = _PrepareImageDoFn(prepare, fetch, run_id, progress)

    def expand(self, refs: beam.PCollection) -> PreparedOutputs:
        """Apply the preparation DoFn."""
        result = refs | "Prepare" >> beam.ParDo(self._fn).with_outputs(ERRORS, main="images")
        return PreparedOutputs(result.images, result[ERRORS])
