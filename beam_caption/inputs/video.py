"""Videos (MOV, MP4, ...): a few keyframes, evenly spaced, each shrunk and encoded as JPEG like a
photo, sent together in one request for one caption of the clip.

PyAV (FFmpeg's libraries in a registry wheel) opens the container from a seekable file: a
local, gs:// or s3:// video is never held in memory whole (a minute of 4K is ~400 MB). For
each of N times evenly spaced through the clip (at (i + 0.5) / N of its length, so neither the
first black frame nor the last), it seeks to the keyframe at or before that time and decodes
that one frame: N seeks and N frame decodes, never the whole stream. Two times landing on the
same keyframe (a short clip, few keyframes) send it once.

The identity of a video (its image_id) is the sha256 of its bytes, streamed. A file FFmpeg
cannot read, or with no frame to decode (truncated), is an ImageError (decode_error) with
FFmpeg's reason.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from PIL import Image

from beam_caption.inputs.files import open_uri
from beam_caption.inputs.images import (
    ImageError,
    PreparedImage,
    PrepareSettings,
    first_line,
    sent_size,
)
from beam_caption.inputs.metadata import PhotoMeta, video_meta
from beam_caption.inputs.pixels import encode_upright

_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class VideoHeader:
    """What a video's container says: its coded frame size (a phone's portrait clip is coded
    landscape with a display rotation, which only its frames carry), length, frame count.
    The size's orientation does not change a token count. `meta`: its capture facts."""

    width: int
    height: int
    duration_s: float
    frame_count: int
    meta: PhotoMeta = field(default_factory=PhotoMeta)


def hash_stream(handle: BinaryIO) -> tuple[str, int]:
    """(sha256 hex, size) of a file read in chunks, then rewound."""
    digest, size = hashlib.sha256(), 0
    while chunk := handle.read(_HASH_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    handle.seek(0)
    return digest.hexdigest(), size


def sample_times(duration_s: float, frames: int) -> list[float]:
    """N times evenly spaced through a clip: the middle of each of N equal parts."""
    if duration_s <= 0:
        return [0.0]
    return [duration_s * (i + 0.5) / frames for i in range(frames)]


def video_header(source: BinaryIO | bytes) -> VideoHeader:
    """The coded size, length, frame count and capture facts of a video, from its container
    (nothing decoded); raises ImageError (decode_error)."""
    with _opened(source) as (container, stream):
        return _header(container, stream)


def prepare_video_uri(uri: str, settings: PrepareSettings, *, data: bytes | None = None,
                      source_id: str | None = None, prompt: str | None = None,
                      version: str | None = None,
                      sidecar: PhotoMeta | None = None) -> PreparedImage:
    """prepare_video for a video at `uri`, streamed from its filesystem (or `data`, an https://
    download already in memory). Raises ImageError."""
    kwargs: dict[str, Any] = {"source_id": source_id, "prompt": prompt, "version": version,
                              "sidecar": sidecar}
    if data is not None:
        if not data:
            raise ImageError("empty_file", "the file is empty", stage="read")
        return prepare_video(uri, data, settings, settings.video_frames,
                             image_id=hashlib.sha256(data).hexdigest(), size=len(data), **kwargs)
    with open_uri(uri) as handle:
        image_id, size = hash_stream(handle)
        if not size:
            raise ImageError("empty_file", "the file is empty", stage="read")
        return prepare_video(uri, handle, settings, settings.video_frames, image_id=image_id,
                             size=size, **kwargs)


def prepare_video(uri: str, source: BinaryIO | bytes, settings: PrepareSettings, frames: int,
                  *, image_id: str, size: int, source_id: str | None = None,
                  prompt: str | None = None, version: str | None = None,
                  sidecar: PhotoMeta | None = None) -> PreparedImage:
    """Decode N keyframes of a video, shrink and encode each as JPEG: one PreparedImage with
    media_type "video" whose `frames` are sent together. Raises ImageError."""
    with _opened(source) as (container, stream):
        header = _header(container, stream)
        meta = header.meta.filled_from(sidecar)
        meta = meta if settings.location else meta.without_location()
        if header.width * header.height > settings.max_pixels:
            raise ImageError("too_many_pixels", f"video frames have {header.width}x"
                             f"{header.height} pixels, above the cap of {settings.max_pixels}")
        jpegs: list[bytes] = []
        times: list[float] = []
        sent, shown = (0, 0), (header.width, header.height)
        try:
            for at, image, turned in _keyframes(container, stream,
                                                sample_times(header.duration_s, frames)):
                jpeg, width, height = _encode(image, settings)
                jpegs.append(jpeg)
                times.append(round(at, 3))
                sent = (width, height)
                shown = (header.height, header.width) if turned else shown
        except ImageError:
            raise
        except Exception as exc:  # FFmpeg's errors on damaged streams
            raise ImageError("decode_error", f"cannot decode video: {first_line(exc)}") from exc
    if not jpegs:
        raise ImageError("decode_error", "no video frame could be decoded (truncated file?)")
    return PreparedImage(uri=uri, image_id=image_id, jpeg=jpegs[0], width=shown[0],
                         height=shown[1], sent_width=sent[0], sent_height=sent[1],
                         bytes=size, source_format="VIDEO", source_id=source_id, prompt=prompt,
                         version=version, meta=meta, media_type="video", frames=tuple(jpegs),
                         duration_s=round(header.duration_s, 3),
                         frame_count=header.frame_count, frame_times_s=tuple(times))


class _opened:
    """A PyAV container and its first video stream, opened from a file or bytes; closed after."""

    def __init__(self, source: BinaryIO | bytes) -> None:
        self._source = io.BytesIO(source) if isinstance(source, bytes) else source
        self._container: Any = None

    def __enter__(self) -> tuple[Any, Any]:
        import av  # a large native library: imported by the workers that meet a video

        try:
            self._container = av.open(self._source, mode="r")
            streams = self._container.streams.video
        except Exception as exc:  # av.error.InvalidDataError and friends
            raise ImageError("decode_error", f"cannot open video: {first_line(exc)}") from exc
        if not streams:
            self._container.close()
            raise ImageError("decode_error", "the file has no video stream")
        stream = streams[0]
        stream.thread_type = "AUTO"
        return self._container, stream

    def __exit__(self, *exc: object) -> None:
        if self._container is not None:
            self._container.close()


def _header(container: Any, stream: Any) -> VideoHeader:
    width, height = stream.codec_context.width, stream.codec_context.height
    if not width or not height:
        raise ImageError("decode_error", "the video stream has no frame size")
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    else:
        duration = float(container.duration or 0) / 1_000_000  # AV_TIME_BASE
    frames = int(stream.frames or 0)
    if not frames and stream.average_rate:
        frames = round(duration * float(stream.average_rate))
    meta = video_meta(dict(container.metadata or {}))
    return VideoHeader(width, height, max(0.0, duration), frames, meta)


def _keyframes(container: Any, stream: Any,
               times: list[float]) -> Iterator[tuple[float, Image.Image, bool]]:
    """(time, upright picture, whether it was turned a quarter) of the keyframe at or before
    each time, each keyframe once."""
    seen: set[int] = set()
    base = stream.time_base
    for at in times:
        container.seek(int(at / base) if base else 0, stream=stream, backward=True,
                       any_frame=False)
        frame = next(iter(container.decode(stream)), None)
        if frame is None or frame.pts in seen:
            continue
        seen.add(frame.pts)
        image = frame.to_image()
        rotation = getattr(frame, "rotation", 0) or 0
        if rotation % 360:
            image = image.rotate(rotation, expand=True)  # counter-clockwise, as PyAV states it
        at = float(frame.pts * base) if frame.pts is not None and base else at
        yield at, image, bool(rotation % 180)


def _encode(image: Image.Image, settings: PrepareSettings) -> tuple[bytes, int, int]:
    target = sent_size(image.width, image.height, settings.max_side)
    if target != image.size:
        image = image.resize(target, Image.Resampling.BICUBIC)
    return encode_upright(image, 1, settings.jpeg_quality)
