"""Reading any input's bytes: Beam FileSystems paths, and https:// downloads several at a time.

An `ImageReader` belongs to one holder (a DoFn, the gallery) and leases the process's
`UrlFetcher` for its settings only when it meets a URL; closing the reader releases the lease,
and the last holder to leave closes the download session (resources.py), so one DoFn's
teardown never cuts the downloads of another.
"""

from __future__ import annotations

import concurrent.futures
import threading

from beam_caption import resources
from beam_caption.inputs.download import FetchSettings, UrlFetcher
from beam_caption.inputs.files import is_url, read_uri_bytes

__all__ = ["FetchSettings", "ImageReader", "is_url", "read_image_bytes", "read_uri_bytes"]


class ImageReader:
    """Reads image bytes for one holder; `close()` when done (also a context manager)."""

    def __init__(self, settings: FetchSettings) -> None:
        self.settings = settings
        self._fetcher: UrlFetcher | None = None
        self._lock = threading.Lock()  # threads of one holder (the gallery) share a reader

    def read(self, uri: str) -> bytes:
        """All bytes of `uri` (a path, gs://, s3:// or https://); raises ImageError."""
        if not is_url(uri):
            return read_uri_bytes(uri, max_bytes=self.settings.max_bytes)
        return self._url_fetcher().fetch(uri)

    def submit(self, url: str) -> concurrent.futures.Future[bytes]:
        """Start downloading an https:// URL; the future holds its bytes or an ImageError."""
        return self._url_fetcher().submit(url)

    def close(self) -> None:
        """Release the download session (the last holder in the process closes it)."""
        with self._lock:
            if self._fetcher is None:
                return
            self._fetcher = None
        resources.release(("fetcher", self.settings))

    def __enter__(self) -> ImageReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _url_fetcher(self) -> UrlFetcher:
        with self._lock:
            if self._fetcher is None:
                self._fetcher = resources.acquire(("fetcher", self.settings),
                                                  lambda: UrlFetcher(self.settings),
                                                  UrlFetcher.close)
            return self._fetcher


def read_image_bytes(uri: str, settings: FetchSettings) -> bytes:
    """All bytes of one input, for a one-off read (a DoFn keeps an ImageReader instead)."""
    with ImageReader(settings) as reader:
        return reader.read(uri)
