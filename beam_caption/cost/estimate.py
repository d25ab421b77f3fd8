"""`beam-caption estimate`: the Beam pipeline that counts tokens from image headers, and the bill.

The pipeline reads only what it needs to know an image's size (a header prefix via Beam
FileSystems, or the fetcher for https:// URLs), never decodes pixels and never calls a model:

    ExpandInputs -> [sample] -> MeasureImage -> CombineGlobally(TallyFn) -> one tally dict

Each image's prompt tokens are computed with `tokens.prompt_tokens` exactly as the engine's
`estimate_prompt_tokens` does, for the size the image will be *sent* at (`sent_size`, the shrink
`prepare_image` applies), once per distinct image-token rule in the price table and per --max-side
variant. Because the rule is shared by the engine and the simulator, the estimated input tokens
equal the simulated bill's; only the answer's length is a guess (`expected_output_tokens`).

`build_report` turns a tally into the bill: pure arithmetic on the price table, unit-tested.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_caption.config import CaptionConfig
from beam_caption.cost import tokens
from beam_caption.cost.pricing import ModelPrice
from beam_caption.inputs.fetch import FetchSettings, is_url, read_image_bytes, read_uri_bytes
from beam_caption.inputs.images import ImageError, image_size_from_header, sent_size
from beam_caption.inputs.sources import ImageRef

# A one-sentence caption is typically 15-30 English words; at ~1.3 tokens per word that is 20-40
# tokens. 30 is the middle. Reasoning models may add hidden reasoning tokens, which the API bills
# as output: the worst case (every answer at --max-output-tokens) bounds both.
DEFAULT_EXPECTED_OUTPUT_TOKENS = 30
# The --max-side values every estimate compares (plus the chosen one): original, 512, 768.
COMPARE_SIDES = (0, 512, 768)
# JPEG headers (EXIF with its thumbnail, ICC profile) almost always fit in the first 256 KiB; when
# they do not, or a TIFF keeps its directory at the end, the whole file is read instead.
HEADER_PREFIX_BYTES = 256 * 1024
MAX_UNREADABLE_EXAMPLES = 10
# How many alternative models the default comparison shows (two cheaper, two dearer if possible).
DEFAULT_COMPARE_COUNT = 4
# The image rule of a model the price table does not know (as tokens.prompt_tokens assumes).
FALLBACK_RULE_KEY = "fallback"


def rule_key(rule: Mapping[str, Any] | None) -> str:
    """A stable name for an image-token rule (canonical JSON); FALLBACK_RULE_KEY for none."""
    if not rule:
        return FALLBACK_RULE_KEY
    return json.dumps(dict(rule), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class TokenSpec:
    """What the workers need to turn an image size into prompt tokens (picklable).

    `caption` is the run's own CaptionConfig (built by config.build_run_config from the same
    flags), so the prompt, the structured-output suffix, the system prompt and the detail are
    exactly what the run would send.
    """

    caption: CaptionConfig
    rules: tuple[tuple[str, dict[str, Any] | None], ...]  # (rule_key, rule), distinct keys
    max_sides: tuple[int, ...]
    fetch: FetchSettings = field(default_factory=FetchSettings)
    max_pixels: int = 89_478_485

    def keys(self) -> list[tuple[str, int]]:
        """The (rule_key, max_side) pairs every image is measured for, in a fixed order."""
        return [(key, side) for key, _ in self.rules for side in self.max_sides]

    def texts(self, row_prompt: str | None) -> list[str]:
        """The texts of one request, as transforms.estimate_prompt_tokens lists them."""
        req = self.caption.request
        return [t for t in (req.system_prompt, self.caption.prompt_for(row_prompt) or req.prompt)
                if t]


def token_spec(prices: Mapping[str, ModelPrice], caption: CaptionConfig, *,
               max_sides: Iterable[int], fetch: FetchSettings | None = None,
               max_pixels: int = 89_478_485) -> TokenSpec:
    """A TokenSpec covering every image rule in `prices` plus the fallback rule."""
    rules: dict[str, dict[str, Any] | None] = {FALLBACK_RULE_KEY: None}
    for price in prices.values():
        rules.setdefault(rule_key(price.image_tokens), price.image_tokens or None)
    return TokenSpec(caption=caption, rules=tuple(sorted(rules.items())),
                     max_sides=tuple(sorted(set(max_sides))), fetch=fetch or FetchSettings(),
                     max_pixels=max_pixels)


# ---------------------------------------------------------------------------------------------
# Reading sizes


def read_header_size(uri: str, fetch: FetchSettings, max_pixels: int) -> tuple[int, int]:
    """The displayed size of the image at `uri`, from its header; raises ImageError with a code.

    Local, gs:// and s3:// files: only a prefix is read (the whole file if the header does not
    fit). https:// URLs are fetched whole by the guarded fetcher (no range requests). Files the
    run would refuse (too_large, too_many_pixels) get the same codes here.
    """
    if is_url(uri):
        width, height = image_size_from_header(read_image_bytes(uri, fetch))
    else:
        head, size = _read_prefix(uri, fetch)
        if size is not None and size > fetch.max_bytes:
            raise ImageError("too_large", f"file is larger than {fetch.max_bytes} bytes",
                             stage="read")
        try:
            width, height = image_size_from_header(head)
        except ImageError as exc:
            if exc.code != "decode_error" or len(head) < HEADER_PREFIX_BYTES:
                raise  # the prefix was the whole file: the error is real
            width, height = image_size_from_header(read_uri_bytes(uri,
                                                                  max_bytes=fetch.max_bytes))
    if width * height > max_pixels:
        raise ImageError("too_many_pixels", f"image has {width * height} pixels ({width}x"
                         f"{height}), above the cap of {max_pixels}")
    return width, height


def _read_prefix(uri: str, fetch: FetchSettings) -> tuple[bytes, int | None]:
    """The first HEADER_PREFIX_BYTES of a FileSystems file and its size (None if unknown)."""
    try:
        with FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            head = handle.read(HEADER_PREFIX_BYTES)
            if len(head) < HEADER_PREFIX_BYTES:
                return head, len(head)
            return head, _size_of(handle)
    except Exception:  # classified below
        # read_uri_bytes maps every filesystem failure to a read code (not_found, ...); it fails
        # the same way, so the second attempt only happens for files that cannot be read.
        return read_uri_bytes(uri, max_bytes=fetch.max_bytes), None


def _size_of(handle: Any) -> int | None:
    """The size of an open FileSystems file, by seeking to its end (no extra read)."""
    try:
        handle.seek(0, os.SEEK_END)
        return int(handle.tell())
    except Exception:  # not every filesystem's reader can seek
        return None


@dataclass(frozen=True)
class Measured:
    """One input's result: its prompt tokens per TokenSpec.keys(), or the code it failed with."""

    uri: str
    code: str | None = None
    text_tokens: int = 0
    prompt_tokens: tuple[int, ...] = ()


def measure(ref: ImageRef, spec: TokenSpec) -> Measured:
    """Read `ref`'s size and compute its prompt tokens for every rule and --max-side variant."""
    try:
        width, height = read_header_size(ref.uri, spec.fetch, spec.max_pixels)
    except ImageError as exc:
        return Measured(ref.uri, code=exc.code)
    texts = spec.texts(ref.prompt)
    # Exactly transforms.estimate_prompt_tokens, at the size the image would be sent; the loop
    # order is the order of spec.keys().
    detail = spec.caption.request.detail
    counts = tuple(tokens.prompt_tokens(rule, texts, len(texts), [sent_size(width, height, side)],
                                        detail)
                   for _, rule in spec.rules for side in spec.max_sides)
    return Measured(ref.uri, text_tokens=tokens.messages_text_tokens(texts, len(texts)),
                    prompt_tokens=counts)


# ---------------------------------------------------------------------------------------------
# Tallying


@dataclass
class Tally:
    """Sums over measured images: counts, text and prompt tokens per (rule_key, max_side)."""

    images: int = 0
    text_tokens: int = 0
    prompt_tokens: Counter[tuple[str, int]] = field(default_factory=Counter)
    unreadable: Counter[str] = field(default_factory=Counter)
    # The first MAX_UNREADABLE_EXAMPLES (uri, code) by uri: the same whatever the merge order.
    examples: list[tuple[str, str]] = field(default_factory=list)

    @property
    def files(self) -> int:
        """Inputs measured: readable images plus unreadable files."""
        return self.images + sum(self.unreadable.values())

    def add(self, item: Measured, keys: list[tuple[str, int]]) -> Tally:
        """Count one measured input (in place); returns self."""
        if item.code is not None:
            self.unreadable[item.code] += 1
            self.examples = sorted({*self.examples, (item.uri, item.code)})[
                :MAX_UNREADABLE_EXAMPLES]
            return self
        self.images += 1
        self.text_tokens += item.text_tokens
        self.prompt_tokens.update(dict(zip(keys, item.prompt_tokens, strict=True)))
        return self

    def merge(self, other: Tally) -> Tally:
        """Add `other`'s counts (in place); returns self."""
        self.images += other.images
        self.text_tokens += other.text_tokens
        self.prompt_tokens.update(other.prompt_tokens)
        self.unreadable.update(other.unreadable)
        self.examples = sorted({*self.examples, *other.examples})[:MAX_UNREADABLE_EXAMPLES]
        return self

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (prompt tokens nested by rule key, then str(max_side))."""
        nested: dict[str, dict[str, int]] = {}
        for (key, side), count in sorted(self.prompt_tokens.items()):
            nested.setdefault(key, {})[str(side)] = count
        return {"images": self.images, "text_tokens": self.text_tokens,
                "prompt_tokens": nested, "unreadable": dict(sorted(self.unreadable.items())),
                "unreadable_examples": [{"uri": u, "code": c} for u, c in self.examples]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tally:
        """The inverse of to_dict."""
        prompt = Counter({(key, int(side)): int(count)
                          for key, sides in data["prompt_tokens"].items()
                          for side, count in sides.items()})
        return cls(images=int(data["images"]), text_tokens=int(data["text_tokens"]),
                   prompt_tokens=prompt, unreadable=Counter(data["unreadable"]),
                   examples=[(e["uri"], e["code"]) for e in data["unreadable_examples"]])


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
        tally = (refs
                 | "MeasureImages" >> beam.Map(measure, self._spec)
                 | "Tally" >> beam.CombineGlobally(TallyFn(self._spec.keys())))
        if files is None:
            return tally
        return tally | "FilesTotal" >> beam.Map(_with_files_total, beam.pvalue.AsSingleton(files),
                                                self._sample)
