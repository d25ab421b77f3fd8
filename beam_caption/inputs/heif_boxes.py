"""A HEIC/HEIF/AVIF file's displayed size from its first boxes, for `beam-caption estimate`.

libheif (through pillow-heif) refuses to open a file whose item locations point past its end,
so it cannot read a header prefix: it needs the whole file (2-3 MB for an iPhone photo, 10x the
prefix the estimate reads). The size is in the `meta` box, which phones write before the coded
picture: the primary item (`pitm`), its properties (`iprp`: `ipco` lists them, `ipma` links
items to them), among which `ispe` (the size) and `irot` (a quarter-turn rotation). This reads
those boxes and nothing else; None when the prefix does not hold them (the estimate then reads
the whole file).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

_MAX_DEPTH = 4


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of each box in data[start:end]; stops at a box that
    runs past the data (the rest of a prefix)."""
    end = min(end, len(data))
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        header = 8
        if size == 1:
            if pos + 16 > end:
                return
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header:
            return
        yield kind, pos + header, min(pos + size, end)
        pos += size


def _child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    for found, s, e in _boxes(data, start, end):
        if found == kind:
            return s, e
    return None


def heif_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) as displayed (after `irot`) of a HEIF file's primary image, from its
    boxes; None when they are not all in `data`."""
    try:
        return _size(data)
    except (struct.error, IndexError, ValueError):  # a damaged box: no answer from here
        return None


def _size(data: bytes) -> tuple[int, int] | None:
    meta = _child(data, 0, len(data), b"meta")
    if meta is None:
        return None
    start, end = meta[0] + 4, meta[1]  # meta is a full box: version and flags first
    pitm, iprp = _child(data, start, end, b"pitm"), _child(data, start, end, b"iprp")
    if pitm is None or iprp is None:
        return None
    version = data[pitm[0]]
    primary = struct.unpack(">H" if version == 0 else ">I",
                            data[pitm[0] + 4:pitm[0] + (6 if version == 0 else 8)])[0]
    ipco, ipma = _child(data, *iprp, b"ipco"), _child(data, *iprp, b"ipma")
    if ipco is None or ipma is None:
        return None
    properties = list(_boxes(data, *ipco))
    width = height = None
    rotation = 0
    for index in _associations(data, ipma, primary):
        if not 1 <= index <= len(properties):
            continue
        kind, s, _ = properties[index - 1]
        if kind == b"ispe":
            width, height = struct.unpack(">II", data[s + 4:s + 12])
        elif kind == b"irot":
            rotation = (data[s] & 3) * 90
    if not width or not height:
        return None
    return (height, width) if rotation in (90, 270) else (width, height)


def _associations(data: bytes, ipma: tuple[int, int], item: int) -> list[int]:
    """The property indices (1-based) `ipma` links to `item`."""
    pos = ipma[0]
    version, flags = data[pos], int.from_bytes(data[pos + 1:pos + 4], "big")
    count = struct.unpack(">I", data[pos + 4:pos + 8])[0]
    pos += 8
    for _ in range(count):
        if version < 1:
            item_id, pos = struct.unpack(">H", data[pos:pos + 2])[0], pos + 2
        else:
            item_id, pos = struct.unpack(">I", data[pos:pos + 4])[0], pos + 4
        n, pos = data[pos], pos + 1
        indices = []
        for _ in range(n):
            if flags & 1:
                value, pos = struct.unpack(">H", data[pos:pos + 2])[0] & 0x7FFF, pos + 2
            else:
                value, pos = data[pos] & 0x7F, pos + 1
            indices.append(value)
        if item_id == item:
            return indices
    return []
