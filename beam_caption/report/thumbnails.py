"""What the gallery shows: a deterministic sample of the captions, and their thumbnails.

Thumbnails are read and prepared as the pipeline reads and prepares its inputs, then re-encoded as
~160 px JPEGs of ~3 KB (base64 data URIs), so a 1,000-image gallery stays at a few MB; `sample`
picks a deterministic subset of a huge run. report/gallery.py puts them on the page.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pyarrow as pa
from PIL import Image

from beam_caption.inputs.fetch import FetchSettings, ImageReader, is_url, read_image_bytes
from beam_caption.inputs.images import PrepareSettings, prepare_image
from beam_caption.inputs.kinds import media_type_of
from beam_caption.inputs.video import prepare_video_uri

_LOG = logging.getLogger(__name__)

THUMB_SIDE = 160
THUMB_QUALITY = 50  # ~3 KB per photo at 160 px: 1,000 cards come to ~4.7 MB with base64
CARD_COLUMNS = ["uri", "image_id", "caption", "prompt_tokens", "completion_tokens", "cost_usd",
                "batch", "deduplicated", "width", "height", "sent_width", "sent_height",
                "finish_reason", "latency_ms"]
# Shown when the output has them (outputs written before phone libraries did not).
LIBRARY_COLUMNS = ["media_type", "near_duplicate", "deduplicated_from", "taken_at",
                   "frame_times_s"]
# Thumbnails are read like pipeline inputs, but a slow host should not hold the report for long.
_FETCH = FetchSettings(timeout_s=15.0)


def sample_captions(captions: pa.Table, sample: int) -> list[dict[str, Any]]:
    """Up to `sample` caption rows (all if sample <= 0), chosen deterministically, in uri order.

    Rows are ranked by sha256(uri, image_id): the same output always gives the same sample, and
    the sample spreads over every shard and run instead of being the first file's rows.
    """
    table = captions.select([c for c in (*CARD_COLUMNS, *LIBRARY_COLUMNS)
                             if c in captions.column_names])
    if 0 < sample < table.num_rows:
        keys = zip(table["uri"].to_pylist(), table["image_id"].to_pylist(), strict=True)
        ranks = [hashlib.sha256(f"{uri}\0{image_id}".encode()).digest() for uri, image_id in keys]
        keep = sorted(range(len(ranks)), key=ranks.__getitem__)[:sample]
        table = table.take(sorted(keep))
    return sorted(table.to_pylist(), key=lambda row: (row["uri"], row["image_id"]))


def thumbnail_data_uri(uri: str, side: int = THUMB_SIDE,
                       reader: ImageReader | None = None) -> str | None:
    """The image at `uri` as a small JPEG data URI, or None if it cannot be read or decoded.

    Uses the pipeline's own reading (FileSystems or guarded https) and preparation (draft-mode
    decode, EXIF orientation, decompression-bomb guard): it shows the photo turned as the model
    saw it, and a bad file fails here as it failed there.
    """
    settings = PrepareSettings(max_side=side, jpeg_quality=95, video_frames=1)
    try:
        if media_type_of(uri) == "video":  # its first keyframe (streamed, not read whole)
            data = _read(uri, reader) if is_url(uri) else None
            small = prepare_video_uri(uri, settings, data=data).jpeg
        else:
            small = prepare_image(uri, _read(uri, reader), settings).jpeg
        with Image.open(io.BytesIO(small)) as im:
            out = io.BytesIO()
            # Optimized Huffman tables save ~10% over prepare_image's plain encoding.
            im.save(out, "JPEG", quality=THUMB_QUALITY, optimize=True)
    except Exception as exc:  # any unreadable image becomes a placeholder, never a failed report
        _LOG.debug("no thumbnail for %s: %s", uri, type(exc).__name__)
        return None
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def _read(uri: str, reader: ImageReader | None) -> bytes:
    return reader.read(uri) if reader is not None else read_image_bytes(uri, _FETCH)


def make_thumbnails(uris: Iterable[str], side: int = THUMB_SIDE,
                    workers: int = 8) -> dict[str, str | None]:
    """{uri: data URI or None} for every distinct uri, read on `workers` threads."""
    unique = sorted(set(uris))
    if not unique:
        return {}
    # Threads overlap the waits on gs:// and https reads; Pillow decodes outside the GIL.
    with ImageReader(_FETCH) as reader, ThreadPoolExecutor(max_workers=workers) as pool:
        thumbs = dict(zip(unique, pool.map(lambda u: thumbnail_data_uri(u, side, reader), unique),
                          strict=True))
    missing = sum(1 for value in thumbs.values() if value is None)
    if missing:
        _LOG.warning("%d of %d images could not be read for thumbnails (shown as placeholders)",
                     missing, len(unique))
    return thumbs
