"""Google Cloud credentials for gs:// paths, settled once instead of waited for in every process.

Beam looks for Application Default Credentials the first time a process touches gs://, and when
there are none it retries with backoff for about 25 s before connecting anonymously. A local run
pays that in the launcher and again in every worker process: a 6-photo round trip through the GCS
emulator took 51-77 s, of which under 5 s was work. So the launcher asks google-auth once, with no
retries, and when there are no credentials (the emulator, or a public bucket from a machine that
is not logged in) it tells Beam so in its own process and, through an environment variable, in
the local worker processes it starts: they connect anonymously at once, as Beam would have after
its retries. With credentials, nothing changes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

_LOG = logging.getLogger(__name__)
ANONYMOUS_ENV = "BEAM_CAPTION_GCS_ANONYMOUS"


def _connect_anonymously() -> None:
    """Fill Beam's per-process credential cache with "none" (what its retries would end in)."""
    from apache_beam.internal.gcp import auth

    with auth._Credentials._credentials_lock:
        auth._Credentials._credentials = None
        auth._Credentials._credentials_init = True


def _have_credentials() -> bool:
    """True when google-auth finds Application Default Credentials (one try, no retries)."""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        google.auth.default()
    except DefaultCredentialsError:
        return False
    return True


def settle_gcs_credentials(paths: Iterable[str]) -> None:
    """In the launcher, before any gs:// access: decide once whether to connect anonymously."""
    if not any(path.startswith("gs://") for path in paths):
        return
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if emulator:
        _LOG.info("gs:// goes to the storage emulator at %s, without credentials", emulator)
    elif _have_credentials():
        return
    else:
        _LOG.warning("no Google Cloud credentials found: gs:// is read anonymously (public "
                     "buckets only); run `gcloud auth application-default login` for yours")
    os.environ[ANONYMOUS_ENV] = "1"  # local worker processes inherit it
    _connect_anonymously()


def settle_in_worker() -> None:
    """In a local worker process: connect anonymously if the launcher decided so."""
    if os.environ.get(ANONYMOUS_ENV) == "1":
        _connect_anonymously()
