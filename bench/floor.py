"""The limits printed beside the results: the ideal images/s and the bare CPU cost per image.

ideal images/s = min(in-flight / mean latency, RPM cap / 60). The simulator's latency is
log-normal around its median (sigma 0.25 by default), so the mean is median * exp(sigma^2 / 2),
3% above the median: that is what a full pipe of requests actually waits per request.

Two CPU costs per image are timed over the same images in this one process with
time.process_time (reading the bytes excluded):

- the physical floor (`floor_cost`): what no system that sends images of max-side can avoid,
  written here with Pillow alone and none of our code: a JPEG decoded straight at a DCT scale
  (1/1, 1/2, 1/4, 1/8) when one lands within 90% of max-side, else at the largest scale still
  above it and shrunk once (BOX, the cheapest filter); any other format decoded whole, reduced
  by an integer factor and shrunk once; then one JPEG encode at the same quality. No hashing,
  no EXIF, no checks.
- the bare cost (`bare_prepare_cost`): the project's own inputs.images.prepare_image (sha256,
  decode in draft mode, orient, shrink, encode), which the pipeline pays per image on top of
  Beam and the requests. Goals are judged against the floor, never against our own code.
"""

from __future__ import annotations

import io
import math
import sys
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from beam_caption.inputs.images import PrepareSettings, prepare_image  # noqa: E402

DEFAULT_SIGMA = 0.25  # SimulatorConfig.latency_sigma's default
DCT_SCALES = (1, 2, 4, 8)  # what libjpeg can decode to directly
DCT_SLACK = 0.9  # a long side this close under max-side is the same image (fewer tokens)


def mean_latency_s(latency_ms: float, sigma: float = DEFAULT_SIGMA) -> float:
    """The mean of a log-normal latency with this median (ms) and sigma, in seconds."""
    return latency_ms / 1000 * math.exp(sigma * sigma / 2)


def ideal_images_per_s(in_flight: int, latency_ms: float, rpm: float = 0.0,
                       sigma: float = DEFAULT_SIGMA) -> float:
    """min(in-flight / mean latency, rpm / 60); either term drops out when it is 0."""
    bounds = []
    if latency_ms > 0:
        bounds.append(in_flight / mean_latency_s(latency_ms, sigma))
    if rpm > 0:
        bounds.append(rpm / 60)
    return min(bounds) if bounds else math.inf


def bare_prepare_cost(paths: list[Path], max_side: int = 512, repeat: int = 1) -> float:
    """CPU seconds per image of prepare_image over `paths` (bytes read beforehand, untimed)."""
    settings = PrepareSettings(max_side=max_side)
    datas = [(str(p), p.read_bytes()) for p in paths]
    prepare_image(*datas[0], settings)  # warm up Pillow's plugins and codecs
    started = time.process_time()
    for _ in range(repeat):
        for uri, data in datas:
            prepare_image(uri, data, settings)
    return (time.process_time() - started) / (len(datas) * repeat)


def floor_image(data: bytes, max_side: int = 512, quality: int = 85) -> bytes:
    """The least work that turns one image file into a JPEG of the size a captioning system
    sends (a long side within 90% of `max_side` and at most it; fewer pixels would be a smaller,
    cheaper and worse image, not the same work done faster)."""
    with Image.open(io.BytesIO(data)) as im:
        w, h = im.size
        long_side = max(w, h)
        if im.format == "JPEG":
            fits = [s for s in DCT_SCALES if math.ceil(long_side / s) <= max_side]
            exact = [s for s in fits if math.ceil(long_side / s) >= DCT_SLACK * max_side]
            if exact:  # a DCT scale lands on the size: decode straight to it
                scale = exact[-1]
            else:  # the largest scale still above the size, then one shrink
                scale = max([s for s in DCT_SCALES if math.ceil(long_side / s) >= max_side]
                            or [1])
            im.draft("RGB", (math.ceil(w / scale), math.ceil(h / scale)))
            im.load()
            small = im if im.mode == "RGB" else im.convert("RGB")
        else:
            im.load()
            factor = max(1, long_side // max_side)  # integer reduce, staying above the size
            small = im if im.mode == "RGB" else im.convert("RGB")
            small = small.reduce(factor) if factor > 1 else small
        if max(small.size) > max_side:
            ratio = max_side / max(small.size)
            size = (max(1, round(small.width * ratio)), max(1, round(small.height * ratio)))
            small = small.resize(size, Image.Resampling.BOX)
        out = io.BytesIO()
        small.save(out, "JPEG", quality=quality)
    return out.getvalue()


def floor_cost(paths: list[Path], max_side: int = 512, repeat: int = 1) -> float:
    """CPU seconds per image of floor_image over `paths` (bytes read beforehand, untimed)."""
    datas = [p.read_bytes() for p in paths]
    floor_image(datas[0], max_side)  # warm up Pillow's plugins and codecs
    started = time.process_time()
    for _ in range(repeat):
        for data in datas:
            floor_image(data, max_side)
    return (time.process_time() - started) / (len(datas) * repeat)
