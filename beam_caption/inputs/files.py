"""Reading image bytes from Beam FileSystems (local paths, gs://, s3://), with a size cap.

Every failure is an ImageError(stage="read") with a stable code; messages are safe to show.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import BinaryIO

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from beam_caption.inputs.images import ImageError

_READ_CHUNK = 1024 * 1024


def is_url(uri: str) -> bool:
    """True for http:// and https:// URIs (fetched with aiohttp, not Beam FileSystems)."""
    return uri[:8].lower().startswith(("http://", "https://"))


def read_uri_bytes(uri: str, *, max_bytes: int) -> bytes:
    """All bytes of a local path or Beam FileSystems URI (gs://, s3://); not for http(s).

    Raises ImageError(stage="read"): not_found, permission_denied, empty_file, too_large,
    read_error.
    """
    if is_url(uri):
        raise ValueError("read_uri_bytes does not fetch http(s) URLs; use read_image_bytes")
    try:
        # UNCOMPRESSED: Beam's default (AUTO) would gunzip a file named *.gz behind our back.
        with FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            data = _read_capped(handle, max_bytes)
    except ImageError:
        raise
    except Exception as exc:  # filesystems raise OSError, BeamIOError, google.api_core errors
        raise _read_error(exc) from exc
    if not data:
        raise ImageError("empty_file", "the file is empty", stage="read")
    return data


@contextlib.contextmanager
def open_uri(uri: str) -> Iterator[BinaryIO]:
    """A seekable handle on a local path or Beam FileSystems URI, for files read in parts (a
    video); opening failures raise ImageError(stage="read") as read_uri_bytes does."""
    try:
        handle = FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED)
    except Exception as exc:  # filesystems raise OSError, BeamIOError, google.api_core errors
        raise _read_error(exc) from exc
    with handle:
        yield handle


def _read_capped(handle: BinaryIO, max_bytes: int) -> bytes:
    """Read until EOF, failing with too_large as soon as more than max_bytes arrive."""
    parts: list[bytes] = []
    total = 0
    while True:
        chunk = handle.read(min(_READ_CHUNK, max_bytes + 1 - total))
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        total += len(chunk)
        if total > max_bytes:
            raise ImageError("too_large", f"file is larger than {max_bytes} bytes", stage="read")


def _read_error(exc: BaseException) -> ImageError:
    """Map a filesystem exception (local, GCS, S3, possibly wrapped by Beam) to a read code."""
    for cause in causes(exc):
        status = getattr(cause, "code", None)
        if isinstance(cause, FileNotFoundError) or status == 404:
            return ImageError("not_found", "file not found", stage="read")
        if isinstance(cause, PermissionError) or status in (401, 403):
            return ImageError("permission_denied", "permission denied", stage="read")
        if isinstance(cause, IsADirectoryError):
            folder = getattr(cause, "filename", None)
            if isinstance(folder, str) and not os.access(folder, os.R_OK | os.X_OK):
                return ImageError("permission_denied", "folder cannot be listed: permission "
                                  "denied", stage="read")
            return ImageError("read_error", "path is a directory, not a file", stage="read")
    why = next((c.strerror for c in causes(exc) if isinstance(c, OSError) and c.strerror), None)
    return ImageError("read_error", f"cannot read file: {why or type(exc).__name__}",
                      stage="read")


def causes(exc: BaseException) -> list[BaseException]:
    """The exception, its __cause__/__context__ chain and BeamIOError's per-path details."""
    seen: list[BaseException] = []
    stack = [exc]
    while stack and len(seen) < 20:
        current = stack.pop()
        if current in seen:
            continue
        seen.append(current)
        details = getattr(current, "exception_details", None)
        if isinstance(details, dict):
            stack.extend(e for e in details.values() if isinstance(e, BaseException))
        stack.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return seen
