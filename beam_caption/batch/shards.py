"""Request shards: each image's Batch API line, and JSONL files written within the API's limits.

Shard files respect both Batch API limits (lines and bytes; base64 images make bytes the binding
one). Each WriteBatchShards DoFn streams lines into its current shard file and keeps only the
request keys and row metadata in memory, starting a new file when the next line would pass a
limit and closing the last one in finish_bundle. Images with the same request_key in one bundle
are sent once (the Batch API also rejects a file with a repeated custom_id); collect fans the
answer out to each of them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import GlobalWindows

from beam_caption.batch import ledger as bs
from beam_caption.batch.formats import request_line
from beam_caption.config import BatchConfig, CaptionConfig
from beam_caption.inputs.images import PreparedImage
from beam_caption.layout import BATCH_DIR
from beam_caption.pipeline.prepare import ERRORS
from beam_caption.pipeline.rows import error_row

META_SCHEMA = pa.schema([
    pa.field("request_key", pa.string(), nullable=False),
    pa.field("source_key", pa.string()),
    pa.field("uri", pa.string(), nullable=False),
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("source_id", pa.string()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("sent_width", pa.int32()),
    pa.field("sent_height", pa.int32()),
    pa.field("bytes", pa.int64()),
    pa.field("estimated_prompt_tokens", pa.int64()),
])


class BatchItem(NamedTuple):
    """One request as a JSONL line (no newline) plus the metadata of the image it came from."""

    request_key: str
    line: bytes
    meta: dict[str, Any]


@dataclass(frozen=True)
class ShardInfo:
    """A closed shard file: paths relative to the output, and what it holds."""

    path: str
    meta: str
    lines: int
    images: int
    bytes: int


def batch_item(config: CaptionConfig, image: PreparedImage) -> BatchItem:
    """The batch line for one prepared image, in its provider's format; its custom_id (or
    Gemini's metadata key) is the request_key."""
    built = config.image_request(image)  # a video: its keyframes, one request
    key = built.key
    endpoint = config.endpoint
    body = endpoint.adapter.build_request(config.request, built.images, built.prompt)
    line = json.dumps(request_line(endpoint.provider, key, body), separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")
    meta = {"request_key": key, "uri": image.uri, "image_id": image.image_id,
            "source_id": image.source_id, "width": image.width, "height": image.height,
            "sent_width": image.sent_width, "sent_height": image.sent_height,
            "bytes": image.bytes,
            "source_key": config.source_key(image.uri, image.version, image.prompt),
            "estimated_prompt_tokens": built.estimated_prompt_tokens}
    return BatchItem(key, line, meta)


class LineTooLarge(ValueError):
    """One request is larger than a whole batch file may be."""


class ShardWriter:
    """Streams lines into shard files under `directory`, never passing `max_lines`/`max_bytes`.

    Only request keys and row metadata stay in memory. A request key seen again anywhere in the
    writer's life (one bundle) is not written again: its row metadata joins the shard that holds
    the line, so collect gives it the same answer. The metadata sidecars are therefore written in
    `finish`, when no more rows can join them.
    """

    def __init__(self, output: str, directory: str, max_lines: int, max_bytes: int,
                 create: Callable[[str], Any] = FileSystems.create) -> None:
        self._output = output
        self._max_lines = max_lines
        self._max_bytes = max_bytes
        self._create = create
        self._handle: Any = None
        self._names: list[str] = []  # one per shard, without extension
        self._metas: list[list[dict[str, Any]]] = []
        self._lines: list[int] = []
        self._bytes: list[int] = []
        self._shard_of: dict[str, int] = {}  # request_key -> shard index
        # Names sort in writing order within a writer; the prefix keeps writers apart.
        self._prefix = f"{directory}/shard-{uuid.uuid4().hex[:12]}"

    def add(self, item: BatchItem) -> None:
        """Add one request (or one more image for a request already written)."""
        shard = self._shard_of.get(item.request_key)
        if shard is not None:
            self._metas[shard].append(item.meta)
            return
        size = len(item.line) + 1
        if size > self._max_bytes:
            raise LineTooLarge(f"the request is {size} bytes, more than a batch file may hold "
                               f"({self._max_bytes}); lower --max-side or --jpeg-quality")
        if self._handle is not None and (self._lines[-1] + 1 > self._max_lines
                                         or self._bytes[-1] + size > self._max_bytes):
            self._close_file()
        if self._handle is None:
            self._open_file()
        self._handle.write(item.line + b"\n")
        self._shard_of[item.request_key] = len(self._names) - 1
        self._metas[-1].append(item.meta)
        self._lines[-1] += 1
        self._bytes[-1] += size

    def _open_file(self) -> None:
        self._names.append(f"{self._prefix}-{len(self._names):05d}")
        self._metas.append([])
        self._lines.append(0)
        self._bytes.append(0)
        self._handle = self._create(bs.resolve(self._output, self._names[-1] + ".jsonl"))

    def _close_file(self) -> None:
        self._handle.close()
        self._handle = None

    def finish(self) -> list[ShardInfo]:
        """Close the open file, write every sidecar, and describe the shards written."""
        if self._handle is not None:
            self._close_file()
        shards = []
        for name, metas, lines, size in zip(self._names, self._metas, self._lines, self._bytes,
                                            strict=True):
            with self._create(bs.resolve(self._output, name + ".meta.parquet")) as handle:
                pq.write_table(pa.Table.from_pylist(metas, schema=META_SCHEMA), handle,
                               compression="zstd")
            shards.append(ShardInfo(name + ".jsonl", name + ".meta.parquet", lines, len(metas),
                                    size))
        self._names, self._metas, self._lines, self._bytes = [], [], [], []
        self._shard_of = {}
        return shards


class _WriteShardsDoFn(beam.DoFn):
    """BatchItem -> ShardInfo per shard file (at the end of the bundle); too-large requests
    become error rows."""

    def __init__(self, output: str, run_id: str, batch: BatchConfig) -> None:
        self._output = output
        self._run_id = run_id
        self._batch = batch
        self._writer: ShardWriter | None = None

    def start_bundle(self) -> None:
        """Each bundle writes its own shard files."""
        self._writer = ShardWriter(self._output, f"{BATCH_DIR}/{self._run_id}",
                                   self._batch.max_lines, self._batch.max_bytes)

    def process(self, item: BatchItem) -> Iterator[Any]:
        """Append the line; yield the shards that filled up."""
        assert self._writer is not None
        try:
            self._writer.add(item)
        except LineTooLarge as exc:
            meta = item.meta
            yield TaggedOutput(ERRORS, error_row(
                uri=meta["uri"], image_id=meta["image_id"], stage="request", code="too_large",
                message=str(exc), request_key=item.request_key, run_id=self._run_id))

    def finish_bundle(self) -> Iterator[Any]:
        """Close the bundle's files and describe them: a bundle never ends with a file open."""
        assert self._writer is not None
        for info in self._writer.finish():
            yield GlobalWindows.windowed_value_at_end_of_window(info)


class BuildBatchLines(beam.PTransform):
    """PreparedImage -> BatchItem (the request line and the row metadata)."""

    def __init__(self, config: CaptionConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, images: beam.PCollection) -> beam.PCollection:
        """One Map."""
        return images | "BatchLine" >> beam.Map(_to_item, self._config)


def _to_item(image: PreparedImage, config: CaptionConfig) -> BatchItem:
    return batch_item(config, image)


class WriteBatchShards(beam.PTransform):
    """BatchItem -> ShardInfo, with an `errors` output for requests too large for any file."""

    def __init__(self, output: str, run_id: str, batch: BatchConfig) -> None:
        super().__init__()
        self._fn = _WriteShardsDoFn(output, run_id, batch)

    def expand(self, items: beam.PCollection) -> Any:
        """Apply the shard-writing DoFn."""
        return items | "WriteShards" >> beam.ParDo(self._fn).with_outputs(ERRORS, main="shards")
