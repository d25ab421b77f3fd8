"""The limits printed beside the results: the ideal images/s and the bare CPU cost per image.

ideal images/s = min(in-flight / mean latency, RPM cap / 60). The simulator's latency is
log-normal around its median (sigma 0.25 by default), so the mean is median * exp(sigma^2 / 2),
3% above the median: that is what a full pipe of requests actually waits per request.

The bare cost is inputs.images.prepare_image (read bytes excluded: sha256, decode in draft
mode, orient, shrink, JPEG encode) timed over the same images in this one process with
time.process_time: the CPU no captioning system can avoid if it sends 512 px images.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from beam_caption.inputs.images import PrepareSettings, prepare_image  # noqa: E402

DEFAULT_SIGMA = 0.25  # SimulatorConfig.latency_sigma's default


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
