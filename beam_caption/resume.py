"""SkipDone: drop images whose answer an earlier output already holds (--resume, --incremental).

The identity of an answer is its request_key: sha256 of the image bytes plus everything that
shapes the answer (model, prompt, generation and preparation settings). Computing it needs the
bytes, so each candidate is read and hashed once here and read again (and decoded) only if it
still needs captioning: for a resumed run most images are skipped after the cheap pass.

The join with the earlier keys is a CoGroupByKey, not a side input, so it scales to outputs with
hundreds of millions of rows: no worker ever holds the set of done keys in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_caption import metrics as m
from beam_caption.client import request_key
from beam_caption.config import CaptionConfig
from beam_caption.fetch import FetchSettings, read_image_bytes
from beam_caption.images import ImageError
from beam_caption.sources import ImageRef
from beam_caption.transforms import request_params

ALREADY_CAPTIONED = "already_captioned"


class _KeyImageDoFn(beam.DoFn):
    """ImageRef -> (request_key, ref); unreadable images get a key that matches nothing."""

    def __init__(self, fetch: FetchSettings, caption: CaptionConfig) -> None:
        self._fetch = fetch
        self._caption = caption

    def process(self, ref: ImageRef) -> Iterator[tuple[str, ImageRef]]:
        """Hash the image's bytes into its request key."""
        try:
            data = read_image_bytes(ref.uri, self._fetch)
        except ImageError:
            # PrepareImages will read it again and write the error row with its code.
            yield f"unreadable:{ref.uri}", ref
            return
        image_id = hashlib.sha256(data).hexdigest()
        params = request_params(self._caption, self._caption.prompt_for(ref.prompt))
        yield request_key(image_id, params), ref


def _undone(element: tuple[str, dict[str, Iterable[Any]]]) -> Iterator[ImageRef]:
    _, groups = element
    todo = list(groups["todo"])
    if any(True for _ in groups["done"]):
        if todo:
            beam.metrics.Metrics.counter(m.NAMESPACE, ALREADY_CAPTIONED).inc(len(todo))
        return
    yield from todo


class SkipDone(beam.PTransform):
    """ImageRef -> ImageRef minus those already captioned in `outputs` (same request_key)."""

    def __init__(self, outputs: tuple[str, ...], fetch: FetchSettings,
                 caption: CaptionConfig) -> None:
        super().__init__()
        self._outputs = outputs
        self._fetch = fetch
        self._caption = caption

    def expand(self, refs: beam.PCollection) -> beam.PCollection:
        """Key, anti-join, keep the undone."""
        keyed = refs | "KeyImages" >> beam.ParDo(_KeyImageDoFn(self._fetch, self._caption))
        done = [
            refs.pipeline
            | f"ReadDoneKeys{i}" >> beam.io.ReadFromParquet(
                FileSystems.join(output, "captions-*.parquet"), columns=["request_key"])
            | f"DoneKeys{i}" >> beam.Map(lambda row: (row["request_key"], True))
            for i, output in enumerate(self._outputs)
        ]
        done_keys = tuple(done) | "AllDoneKeys" >> beam.Flatten() if done else (
            refs.pipeline | "NoDoneKeys" >> beam.Create([]))
        return ({"todo": keyed, "done": done_keys}
                | "JoinDone" >> beam.CoGroupByKey()
                | "KeepUndone" >> beam.FlatMap(_undone))
