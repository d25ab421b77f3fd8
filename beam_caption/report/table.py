"""The one plain-text table layout of the terminal output (`beam-caption report` and `estimate`)."""

from __future__ import annotations

from collections.abc import Sequence


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]], *, numbers: bool = False,
               rule: bool = False, marks: Sequence[bool] | None = None) -> str:
    """Columns two spaces apart, each as wide as its widest cell; no trailing spaces.

    Cells are left-aligned, except with `numbers`, where every column after the first is
    right-aligned so that figures line up on their last digit. `rule` draws a line of dashes under
    the header. `marks` (one per row) starts the marked rows with "> " and every other line,
    header included, with two spaces.
    """
    widths = [max(len(str(cell)) for cell in column)
              for column in zip(header, *rows, strict=True)]

    def line(cells: Sequence[str], mark: bool = False) -> str:
        aligned = [str(cell).rjust(width) if numbers and i else str(cell).ljust(width)
                   for i, (cell, width) in enumerate(zip(cells, widths, strict=True))]
        prefix = "" if marks is None else "> " if mark else "  "
        return (prefix + "  ".join(aligned)).rstrip()

    lines = [line(header)]
    if rule:
        lines.append(("" if marks is None else "  ") + "  ".join("-" * w for w in widths))
    lines += [line(row, mark) for row, mark in zip(rows, marks or [False] * len(rows),
                                                   strict=True)]
    return "\n".join(lines)
