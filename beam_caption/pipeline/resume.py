"""--resume and --incremental: never send again what an earlier run already paid for.

The identity of an answer is its request_key: sha256 of the image bytes plus everything that
shapes the answer (model, prompt, generation and preparation settings). An earlier output holds
answers in three places: its captions tables, the error rows whose answer was billed (a content
filter, a schema mismatch), and the answer journal of a run that was interrupted before it wrote
its tables (journal.py).

SkipDone anti-joins the candidates with every answer twice. First by source_key (the listed
uri, size and modification time plus the request settings), which needs no read: an unchanged
file an earlier run answered is skipped unread. The refs left (new or changed files, URLs,
manifests without sizes and times, answers written before source_key existed) are read and
hashed into their request_key and anti-joined again, so identical bytes under a new name or time
are not paid for twice; only those are read again by PrepareImages. The joins are CoGroupByKeys,
not side inputs, so no worker holds the set of done keys in memory.

CarriedRows gives the resumed run the rows it must write again: journal rows that never reached
the tables, and the billed error rows of the error files the new run replaces. One row per
(request_key, uri) comes out, so a journal replayed twice never makes a duplicate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
import pyarrow.parquet as pq
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems

from beam_caption.config import CaptionConfig
from beam_caption.engine import metrics as m
from beam_caption.inputs.fetch import FetchSettings, ImageReader
from beam_caption.inputs.images import ImageError
from beam_caption.inputs.kinds import media_type_of
from beam_caption.inputs.sources import ImageRef
from beam_caption.layout import journal_root
from beam_caption.pipeline.journal import CAPTIONS, ERRORS, decode_line
from beam_caption.pipeline.rows import is_billed_error

ALREADY_CAPTIONED = "already_captioned"
UNLISTED = "unlisted"  # refs without a listed version (URLs, plain manifests)
CARRIED = "carried_rows"


class AnswerSources(NamedTuple):
    """Which answer stores an earlier output has (the launcher lists them before the run)."""

    output: str
    captions: bool  # captions-*.parquet files
    errors: bool  # errors-*.parquet files
    journal: bool  # _journal/*/*.jsonl files


class _ListedKeyDoFn(beam.DoFn):
    """ImageRef -> (source_key, ref) for a listed file; refs without a version go to UNLISTED."""

    def __init__(self, caption: CaptionConfig) -> None:
        self._caption = caption

    def process(self, ref: ImageRef) -> Iterator[Any]:
        """Key by the listed version, reading nothing."""
        key = self._caption.source_key(ref.uri, ref.version, ref.prompt)
        yield (key, ref) if key is not None else beam.pvalue.TaggedOutput(UNLISTED, ref)


class _ContentKeyDoFn(beam.DoFn):
    """ImageRef -> (request_key, ref); unreadable images get a key that matches nothing."""

    def __init__(self, fetch: FetchSettings, caption: CaptionConfig) -> None:
        self._fetch = fetch
        self._caption = caption
        self._reader: ImageReader | None = None

    def setup(self) -> None:
        """Borrow the process's download session (opened at the first URL)."""
        self._reader = ImageReader(self._fetch)

    def teardown(self) -> None:
        """Give the download session back."""
        if self._reader is not None:
            self._reader.close()

    def process(self, ref: ImageRef) -> Iterator[tuple[str, ImageRef]]:
        """Hash the image's bytes into its request key."""
        assert self._reader is not None
        if ref.problem is not None:
            yield f"unreadable:{ref.uri}", ref
            return
        try:
            data = self._reader.read(ref.uri)
        except ImageError:
            # PrepareImages will read it again and write the error row with its code.
            yield f"unreadable:{ref.uri}", ref
            return
        yield self._caption.request_key(hashlib.sha256(data).hexdigest(), ref.prompt,
                                        media_type_of(ref.uri)), ref


def _undone(element: tuple[str, dict[str, Iterable[Any]]]) -> Iterator[ImageRef]:
    _, groups = element
    todo = list(groups["todo"])
    if any(True for _ in groups["done"]):
        if todo:
            beam.metrics.Metrics.counter(m.NAMESPACE, ALREADY_CAPTIONED).inc(len(todo))
        return
    yield from todo


def _journal_rows(pipeline: beam.Pipeline, output: str, label: str) -> beam.PCollection:
    """(table, row) for every readable line of every journal file under `output`."""
    pattern = FileSystems.join(journal_root(output), "*", "*.jsonl")
    return (pipeline
            | f"Journal{label}" >> beam.Create([pattern])
            | f"MatchJournal{label}" >> fileio.MatchAll(fileio.EmptyMatchTreatment.ALLOW)
            | f"OpenJournal{label}" >> fileio.ReadMatches()
            | f"JournalLines{label}" >> beam.FlatMap(_decoded_lines))


def _decoded_lines(readable: fileio.ReadableFile) -> Iterator[tuple[str, dict[str, Any]]]:
    for line in readable.read().splitlines():
        decoded = decode_line(line) if line.strip() else None
        if decoded is not None:
            yield decoded


def _billed_errors(pipeline: beam.Pipeline, output: str, label: str) -> beam.PCollection:
    """The error rows of `output`'s errors tables whose answer was billed."""
    return (pipeline
            | f"ReadErrors{label}" >> beam.io.ReadFromParquet(
                FileSystems.join(output, "errors-*.parquet"))
            | f"BilledErrors{label}" >> beam.Filter(is_billed_error))


def _table_keys(readable: fileio.ReadableFile) -> Iterator[tuple[str, str | None]]:
    """(request_key, source_key) of every answer in one captions or errors file. Files written
    before source_key existed have no such column: their answers match by content only."""
    with readable.open() as handle:
        parquet = pq.ParquetFile(handle)
        names = set(parquet.schema_arrow.names)
        columns = [c for c in ("request_key", "source_key", "cost_usd", "stage") if c in names]
        for batch in parquet.iter_batches(columns=columns):
            for row in batch.to_pylist():
                if "stage" not in row or is_billed_error(row):
                    yield row["request_key"], row.get("source_key")


def _stored_keys(pipeline: beam.Pipeline, source: AnswerSources, label: str) -> list[Any]:
    """PCollections of (request_key, source_key) for every answer `source` holds."""
    keys = []
    for table, present in (("captions", source.captions), ("errors", source.errors)):
        if present:
            keys.append(pipeline
                        | f"Find{table.title()}{label}" >> fileio.MatchFiles(
                            FileSystems.join(source.output, f"{table}-*.parquet"))
                        | f"Open{table.title()}{label}" >> fileio.ReadMatches()
                        | f"{table.title()}Keys{label}" >> beam.FlatMap(_table_keys))
    if source.journal:
        keys.append(_journal_rows(pipeline, source.output, f"ForKeys{label}")
                    | f"JournalKeys{label}" >> beam.Map(
                        lambda pair: (pair[1]["request_key"], pair[1].get("source_key"))))
    return keys


class SkipDone(beam.PTransform):
    """ImageRef -> ImageRef minus those answered in `sources`, in two anti-joins.

    First by listed version (source_key: uri, size, time and the request settings), reading
    nothing: on a resume, what the earlier run answered is not read again. Then, for the refs
    left, by content (request_key: the bytes' sha256 and the settings), so a copied, renamed
    or touched file whose bytes were answered is not paid for again either; those refs are read
    here and again by PrepareImages.
    """

    def __init__(self, sources: tuple[AnswerSources, ...], fetch: FetchSettings,
                 caption: CaptionConfig) -> None:
        super().__init__()
        self._sources = sources
        self._fetch = fetch
        self._caption = caption

    def expand(self, refs: beam.PCollection) -> beam.PCollection:
        """Key by version, anti-join; key the rest by content, anti-join; keep the undone."""
        pipeline = refs.pipeline
        stored = [keys for i, source in enumerate(self._sources)
                  for keys in _stored_keys(pipeline, source, str(i))]
        answered = (tuple(stored) | "AllAnswered" >> beam.Flatten() if stored
                    else pipeline | "NothingAnswered" >> beam.Create([]))
        by_version = answered | "ByVersion" >> beam.FlatMap(
            lambda keys: [(keys[1], True)] if keys[1] else [])
        by_content = answered | "ByContent" >> beam.Map(lambda keys: (keys[0], True))
        listed = refs | "KeyByVersion" >> beam.ParDo(_ListedKeyDoFn(self._caption)).with_outputs(
            UNLISTED, main="listed")
        changed = ({"todo": listed.listed, "done": by_version}
                   | "JoinVersions" >> beam.CoGroupByKey()
                   | "KeepNewVersions" >> beam.FlatMap(_undone))
        unknown = (changed, listed[UNLISTED]) | "NotSkippedByVersion" >> beam.Flatten()
        keyed = unknown | "KeyByContent" >> beam.ParDo(_ContentKeyDoFn(self._fetch,
                                                                       self._caption))
        return ({"todo": keyed, "done": by_content}
                | "JoinContent" >> beam.CoGroupByKey()
                | "KeepUndone" >> beam.FlatMap(_undone))


class CarriedOutputs(NamedTuple):
    """CarriedRows' outputs: caption rows and error rows to write again."""

    captions: beam.PCollection
    errors: beam.PCollection


def _row_id(row: dict[str, Any]) -> tuple[str, str]:
    return row["request_key"], row["uri"]


def _carry(element: tuple[tuple[str, str], dict[str, Iterable[Any]]]) -> Iterator[Any]:
    """At most one row per (request_key, uri), and none if the captions table has it."""
    _, groups = element
    if any(True for _ in groups["final"]):
        return
    journal = list(groups["journal"])
    choice = (next((row for table, row in journal if table == CAPTIONS), None)
              or next(iter(groups["billed"]), None)
              or next((row for table, row in journal if table == ERRORS), None))
    if choice is None:
        return
    beam.metrics.Metrics.counter(m.NAMESPACE, CARRIED).inc()
    yield choice if "stage" not in choice else beam.pvalue.TaggedOutput(ERRORS, choice)


class CarriedRows(beam.PTransform):
    """PBegin -> the rows an earlier, interrupted run of `source` paid for and a resumed run
    writes again (see the module docstring)."""

    def __init__(self, source: AnswerSources) -> None:
        super().__init__()
        self._source = source

    def expand(self, pbegin: beam.pvalue.PBegin) -> CarriedOutputs:
        """CoGroupByKey the journal and billed errors with the captions table by (key, uri)."""
        pipeline, source = pbegin.pipeline, self._source
        groups: dict[str, Any] = {}
        if source.captions:
            groups["final"] = (pipeline
                               | "ReadFinalIds" >> beam.io.ReadFromParquet(
                                   FileSystems.join(source.output, "captions-*.parquet"),
                                   columns=["request_key", "uri"])
                               | "FinalIds" >> beam.Map(lambda row: (_row_id(row), True)))
        if source.errors:
            groups["billed"] = (_billed_errors(pipeline, source.output, "ToCarry")
                                | "KeyBilled" >> beam.Map(lambda row: (_row_id(row), row)))
        if source.journal:
            groups["journal"] = (_journal_rows(pipeline, source.output, "ToCarry")
                                 | "KeyJournal" >> beam.Map(lambda pair: (_row_id(pair[1]),
                                                                          pair)))
        for name in ("final", "billed", "journal"):
            groups.setdefault(name, pipeline | f"No{name.title()}" >> beam.Create([]))
        carried = (groups | "JoinCarried" >> beam.CoGroupByKey()
                   | "Carry" >> beam.FlatMap(_carry).with_outputs(ERRORS, main="captions"))
        return CarriedOutputs(carried.captions, carried[ERRORS])
