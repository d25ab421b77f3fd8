"""`beam-caption estimate`'s Beam pipeline: count the tokens of every input from image headers.

    ExpandInputs -> [sample] -> MeasureImages -> CombineGlobally(TallyFn) -> one tally dict

Each worker measures its images (estimate/measure.py: a header read, then prompt tokens per image
rule and --max-side variant); TallyFn sums them into one Tally (estimate/tally.py). Only the
answer's length is left to guess, which estimate/bill.py does when it turns the tally into the bill.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam

from beam_caption.estimate.measure import Measured, TokenSpec, measure
from beam_caption.estimate.tally import Tally
from beam_caption.inputs.similar import coarse_key
from beam_caption.inputs.sources import ImageRef


class TallyFn(beam.CombineFn):
    """Combines Measured inputs into one Tally (associative: runs as partial combines)."""

    def __init__(self, keys: list[tuple[str, int]]) -> None:
        super().__init__()
        self._keys = list(keys)

    def create_accumulator(self) -> Tally:
        """An empty tally."""
        return Tally()

    def add_input(self, mutable_accumulator: Tally, element: Measured) -> Tally:
        """Count one input."""
        return mutable_accumulator.add(element, self._keys)

    def merge_accumulators(self, accumulators: Iterable[Tally]) -> Tally:
        """Sum partial tallies."""
        merged = Tally()
        for acc in accumulators:
            merged.merge(acc)
        return merged

    def extract_output(self, accumulator: Tally) -> dict[str, Any]:
        """The tally as a JSON-ready dict."""
        return accumulator.to_dict()


def sample_key(ref: ImageRef) -> bytes:
    """A deterministic pseudo-random rank of an input (sha256 of its URI)."""
    return hashlib.sha256(ref.uri.encode("utf-8")).digest()[:8]


def _explode(refs: list[ImageRef]) -> Iterator[ImageRef]:
    yield from refs


def _with_files_total(tally: dict[str, Any], files_total: int, sample: int) -> dict[str, Any]:
    return {**tally, "files_total": files_total, "sample": sample}


def _time_followers(element: tuple[str, Iterable[float]], seconds: float) -> int:
    """Photos of one camera's minute that are within `seconds` of an earlier representative:
    at most this many could be near-duplicates (their pictures decide, which no header says)."""
    times = sorted(element[1])
    reps: list[float] = []
    followers = 0
    for taken in times:
        if reps and taken - reps[-1] <= seconds:
            followers += 1
        else:
            reps.append(taken)
    return followers


class NearBound(beam.PTransform):
    """Measured photos -> one int: the most requests --near-dedupe could save (grouped by
    camera and minute like the run, so no worker holds the library)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self._seconds = seconds

    def expand(self, measured: beam.PCollection) -> beam.PCollection:
        """Key by camera and minute, count the followers by time alone, sum."""
        return (measured
                | "Timed" >> beam.FlatMap(
                    lambda m: [(coarse_key(m.camera or "", m.taken_s), m.taken_s)]
                    if m.taken_s is not None else [])
                | "ByCameraMinute" >> beam.GroupByKey()
                | "Followers" >> beam.Map(_time_followers, self._seconds)
                | "Sum" >> beam.CombineGlobally(sum))


class EstimateTokens(beam.PTransform):
    """PCollection[ImageRef] -> a PCollection of one tally dict (see Tally.to_dict).

    With `sample`, only that many inputs are measured: the ones with the smallest sample_key, so
    the same inputs give the same sample on every run and runner. `files_total` in the result is
    the number of inputs before sampling, so the caller can scale the tally up.
    """

    def __init__(self, spec: TokenSpec, sample: int | None = None) -> None:
        super().__init__()
        self._spec = spec
        self._sample = sample

    def expand(self, refs: beam.PCollection[ImageRef]) -> beam.PCollection[dict[str, Any]]:
        """[count + sample] -> measure -> tally."""
        files = None
        if self._sample:
            files = refs | "CountFiles" >> beam.combiners.Count.Globally()
            refs = (refs
                    | "Sample" >> beam.combiners.Top.Smallest(self._sample, key=sample_key)
                    | "Explode" >> beam.FlatMap(_explode)
                    | "Spread" >> beam.Reshuffle())
        measured = refs | "MeasureImages" >> beam.Map(measure, self._spec)
        tally = measured | "Tally" >> beam.CombineGlobally(TallyFn(self._spec.keys()))
        if self._spec.near:
            bound = measured | "NearDuplicatesAtMost" >> NearBound(self._spec.near_seconds)
            tally = tally | "WithNearBound" >> beam.Map(
                lambda t, n: {**t, "near_duplicates_max": n}, beam.pvalue.AsSingleton(bound))
        if files is None:
            return tally
        return tally | "FilesTotal" >> beam.Map(_with_files_total, beam.pvalue.AsSingleton(files),
                                                self._sample)
