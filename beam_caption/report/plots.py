"""Small inline SVG plots for the HTML report: a histogram and a scatter plot.

Pure functions from numbers to SVG text, tested on plain lists. Shapes carry CSS classes (bar, dot,
axis) that the page styles: no style attributes, which the page's Content-Security-Policy blocks.
Each bar and dot has a <title>, so hovering shows its exact numbers.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence

import numpy as np

WIDTH, HEIGHT = 320, 150
LEFT, RIGHT, TOP, BOTTOM = 46, 12, 8, 30
MAX_POINTS = 2000  # a scatter of more dots says nothing more and only makes the page heavy

Label = Callable[[float], str]


def _t(text: str) -> str:
    return html.escape(text, quote=True)


def _frame(body: str, x_left: str, x_right: str, y_top: str, y_bottom: str, note: str) -> str:
    """The SVG element: plot area axes, the four extreme labels and an optional note."""
    x1, y1 = WIDTH - RIGHT, HEIGHT - BOTTOM
    note_svg = (f'<text x="{x1}" y="{HEIGHT - 2}" text-anchor="end">{_t(note)}</text>'
                if note else "")
    return (f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img">'
            f"{body}"
            f'<line class="axis" x1="{LEFT}" y1="{y1}" x2="{x1}" y2="{y1}"/>'
            f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{y1}"/>'
            f'<text x="{LEFT - 4}" y="{TOP + 8}" text-anchor="end">{_t(y_top)}</text>'
            f'<text x="{LEFT - 4}" y="{y1}" text-anchor="end">{_t(y_bottom)}</text>'
            f'<text x="{LEFT}" y="{y1 + 12}">{_t(x_left)}</text>'
            f'<text x="{x1}" y="{y1 + 12}" text-anchor="end">{_t(x_right)}</text>'
            f"{note_svg}</svg>")


def empty_plot() -> str:
    """What a plot with no data shows."""
    return '<p class="muted">no data</p>'


def histogram_svg(values: Sequence[float] | np.ndarray, *, bins: int = 24,
                  upper: float | None = None, label: Label = lambda v: f"{v:g}") -> str:
    """A histogram of `values`; values above `upper` (e.g. the p99 of a long tail) are counted
    in the last bar, and a note says how many, so the tail does not squash the rest."""
    if len(values) == 0:
        return empty_plot()
    data = np.asarray(values, dtype=float)
    lo, hi = float(data.min()), float(data.max())
    overflow = 0
    if upper is not None and lo < upper < hi:
        overflow = int((data > upper).sum())
        hi = upper
    if hi <= lo:
        bins, hi = 1, lo  # one value: one full-width bar
    counts, edges = np.histogram(np.clip(data, lo, hi), bins=bins,
                                 range=(lo, hi) if hi > lo else (lo - 0.5, lo + 0.5))
    top = int(counts.max())
    x1, y1 = WIDTH - RIGHT, HEIGHT - BOTTOM
    step = (x1 - LEFT) / bins
    bars = []
    for i, count in enumerate(counts.tolist()):
        height = (y1 - TOP) * count / top
        span = label(lo) if bins == 1 else f"{label(edges[i])} – {label(edges[i + 1])}"
        bars.append(f'<rect class="bar" x="{LEFT + i * step + 0.5:.1f}" y="{y1 - height:.1f}" '
                    f'width="{max(step - 1, 1):.1f}" height="{height:.1f}">'
                    f"<title>{_t(span)}: {count:,}</title></rect>")
    note = f"last bar includes {overflow:,} above" if overflow else f"{len(data):,} values"
    return _frame("".join(bars), label(lo), label(hi) + ("+" if overflow else ""),
                  f"{top:,}", "0", note)


def scatter_svg(points: Sequence[tuple[float, float]], *, x_label: Label = lambda v: f"{v:g}",
                y_label: Label = lambda v: f"{v:g}") -> str:
    """A scatter plot of (x, y) points; more than MAX_POINTS are thinned evenly."""
    if not points:
        return empty_plot()
    if len(points) > MAX_POINTS:
        points = [points[i * len(points) // MAX_POINTS] for i in range(MAX_POINTS)]
    xs = [float(x) for x, _ in points]
    ys = [float(y) for _, y in points]
    x_lo, x_hi = _padded(min(xs), max(xs))
    y_lo, y_hi = _padded(min(ys), max(ys))
    x1, y1 = WIDTH - RIGHT, HEIGHT - BOTTOM
    dots = []
    for x, y in zip(xs, ys, strict=True):
        cx = LEFT + 4 + (x1 - LEFT - 8) * (x - x_lo) / (x_hi - x_lo)
        cy = y1 - 4 - (y1 - TOP - 8) * (y - y_lo) / (y_hi - y_lo)
        dots.append(f'<circle class="dot" cx="{cx:.1f}" cy="{cy:.1f}" r="3">'
                    f"<title>{_t(x_label(x))}, {_t(y_label(y))}</title></circle>")
    return _frame("".join(dots), x_label(x_lo), x_label(x_hi), y_label(y_hi), y_label(y_lo),
                  f"{len(points):,} images")


def _padded(lo: float, hi: float) -> tuple[float, float]:
    """The axis range for data from lo to hi; a single value gets a range around it."""
    if hi > lo:
        return lo, hi
    pad = abs(lo) * 0.1 or 1.0
    return lo - pad, hi + pad
