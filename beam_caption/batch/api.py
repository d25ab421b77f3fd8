"""Batch API client: upload a JSONL file, create, get, cancel and find batches, download; for
OpenAI's Files + Batch API, and for the providers whose batches carry their requests inline
(Anthropic's Message Batches, Gemini's Batch API: batch/<provider>_wire.py's shapes).

The request and response shapes are batch/wire.py's plain functions; `BatchClient` is the thin
blocking adapter that sends them with urllib. Blocking is right here: the launcher and the one-off
submission step do a handful of sequential calls, never thousands in flight.

Retries are api/retry.py's `call_with_retries`: the realtime engine's predicate and backoff, one
layer. One rule protects the bill: creating a batch is not idempotent, so after an ambiguous
failure (timeout, dropped connection, 5xx) `create_once` looks for a batch on the same input file
before trying again, and never creates a second one for a file that already has one.
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType
from typing import Any

from apache_beam.io.filesystems import FileSystems

from beam_caption.api.errors import ApiError, ResponseError, Timeout, TransportError
from beam_caption.api.providers import get_provider
from beam_caption.api.retry import call_with_retries
from beam_caption.auth.keys import require_api_key
from beam_caption.batch.formats import OPENAI, inline_wire
from beam_caption.batch.wire import (
    BatchInfo,
    ambiguous,
    batch_name,
    check_answer,
    create_body,
    multipart_frame,
    parse_batch,
    parse_jsonl,
)

_CHUNK = 1 << 20
INLINE = "inline:"  # an inline-batch shard's "file id": the shard file's path
# Pages of GET /v1/batches searched for a batch on a given input file (100 batches a page).
_FIND_PAGES = 20


class BatchClient:
    """Blocking Files + Batch API calls against an OpenAI-compatible base URL (…/v1)."""

    def __init__(self, base_url: str, api_key: str | None, *, timeout_s: float = 300.0,
                 max_attempts: int = 5, backoff_cap_s: float = 30.0,
                 sleep: Callable[[float], None] = time.sleep,
                 rng: Callable[[], float] = random.random,
                 headers: dict[str, str] | None = None, wire: ModuleType | None = None,
                 model: str = "") -> None:
        self.base_url = base_url.rstrip("/")
        self._key = api_key
        # The provider's own auth headers (api/providers/); None: OpenAI's bearer key.
        self._auth = headers
        # An inline-batch provider's shapes (batch/formats.py); None: OpenAI's Files + Batch.
        self._wire = wire
        self._model = model
        self._timeout_s = timeout_s
        self._max_attempts = max_attempts
        self._backoff_cap_s = backoff_cap_s
        self._sleep = sleep
        self._rng = rng
        # Env proxies are ignored, as the realtime engine's aiohttp session ignores them.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def upload(self, path: str, size: int, filename: str) -> str:
        """Upload the JSONL file at `path` (any Beam filesystem) with purpose=batch; its file id.

        An inline-batch provider has no file to upload: the id names the shard file, which
        create_once reads and sends."""
        if self._wire is not None:
            return INLINE + path
        head, tail, ctype = multipart_frame(filename)

        def body() -> Iterator[bytes]:
            yield head
            with FileSystems.open(path) as handle:
                while chunk := handle.read(_CHUNK):
                    yield chunk
            yield tail

        answer = self._call("POST", "/files", body, {"Content-Type": ctype,
                                                     "Content-Length": str(len(head) + size
                                                                           + len(tail))})
        file_id = answer.get("id") if isinstance(answer, dict) else None
        if not isinstance(file_id, str):
            raise ResponseError("the Files API answered without a file id")
        return file_id

    @property
    def finds_batches(self) -> bool:
        """True when a batch this client may have created can be found again (OpenAI's, by its
        input file; Gemini's, by its display name), so a create that may have happened is looked
        up, never repeated; False for Anthropic's, which carry neither."""
        return self._wire is None or hasattr(self._wire, "list_path")

    def find_created(self, input_file_id: str, metadata: dict[str, str],
                     not_before: int = 0) -> BatchInfo | None:
        """The batch create_once(input_file_id, metadata) made, if the API can tell."""
        return (self.find_batch(input_file_id, not_before) if self._wire is None
                else self._find_named(batch_name(metadata)))

    def _find_named(self, name: str) -> BatchInfo | None:
        """An inline provider's batch named `name` (None: its API lists none, or none has it)."""
        wire = self._wire
        if wire is None or not hasattr(wire, "list_path"):
            return None
        token: str | None = None
        for _ in range(_FIND_PAGES):
            found, token = wire.parse_list(self._call("GET", wire.list_path(token)))
            for display_name, info in found:
                if display_name == name:
                    return info
            if token is None:
                return None
        return None

    def create_once(self, input_file_id: str, metadata: dict[str, str] | None = None,
                    not_before: int = 0) -> BatchInfo:
        """Create a batch for `input_file_id`, unless one already exists for that file.

        `not_before` (unix seconds) bounds the search for an existing batch: batches created
        before it cannot be on this file.
        """
        if self._wire is not None:
            return self._create_inline(input_file_id, metadata or {})
        existing = self.find_batch(input_file_id, not_before)
        if existing is not None:
            return existing
        data = json.dumps(create_body(input_file_id, metadata)).encode()

        def create() -> BatchInfo:
            try:
                return parse_batch(self._send("POST", "/batches", lambda: [data],
                                              {"Content-Type": "application/json"}))
            except ApiError as exc:
                if ambiguous(exc):
                    # The batch may exist although no answer came back: never create a second.
                    found = self.find_batch(input_file_id, not_before)
                    if found is not None:
                        return found
                raise

        return self._retrying(create, "creating a batch")

    def _create_inline(self, input_file_id: str, metadata: dict[str, str]) -> BatchInfo:
        """Create an inline batch of the shard's requests, named after the run and shard. Gemini
        lists batches by name: one made already is returned, and an ambiguous failure looks again
        before a retry. Anthropic's cannot be found: an ambiguous failure is raised, not retried."""
        assert self._wire is not None
        name = batch_name(metadata)
        if self.finds_batches:
            existing = self._find_named(name)
            if existing is not None:
                return existing
        with FileSystems.open(input_file_id.removeprefix(INLINE)) as handle:
            lines = list(parse_jsonl(handle.read().splitlines()))
        path, body = self._wire.create_request(self._model, lines, name)
        data = json.dumps(body).encode()
        wire = self._wire

        def create() -> BatchInfo:
            try:
                return wire.parse_status(self._send("POST", path, lambda: [data],
                                                    {"Content-Type": "application/json"}))
            except ApiError as exc:
                if ambiguous(exc) and self.finds_batches:
                    found = self._find_named(name)  # made although no answer came back
                    if found is not None:
                        return found
                raise

        if self.finds_batches:
            return self._retrying(create, "creating a batch")
        return self._retrying(create, "creating a batch", final=ambiguous)

    def get(self, batch_id: str) -> BatchInfo:
        """GET /v1/batches/{id} (or the inline provider's batch)."""
        if self._wire is not None:
            return self._wire.parse_status(self._call("GET", self._wire.batch_path(batch_id)))
        return parse_batch(self._call("GET", f"/batches/{batch_id}"))

    def cancel(self, batch_id: str) -> BatchInfo:
        """POST /v1/batches/{id}/cancel; a batch that already ended is returned as it is."""
        if self._wire is not None:
            try:
                self._call("POST", self._wire.cancel_path(batch_id), lambda: [b"{}"],
                           {"Content-Type": "application/json"}, final=frozenset({400, 409}))
            except ApiError as exc:
                if exc.status not in (400, 409):  # 400/409: it ended meanwhile
                    raise
            return self.get(batch_id)
        try:
            return parse_batch(self._call("POST", f"/batches/{batch_id}/cancel",
                                          lambda: [b"{}"], {"Content-Type": "application/json"},
                                          final=frozenset({409})))
        except ApiError as exc:
            if exc.status == 409:  # not cancellable: it finished (or is cancelling) meanwhile
                return self.get(batch_id)
            raise

    def find_batch(self, input_file_id: str, not_before: int = 0) -> BatchInfo | None:
        """The newest batch whose input file is `input_file_id` (inline providers: none)."""
        if self._wire is not None:
            return None
        after: str | None = None
        for _ in range(_FIND_PAGES):
            query = "?limit=100" + (f"&after={after}" if after else "")
            page = self._call("GET", f"/batches{query}")
            items = page.get("data") if isinstance(page, dict) else None
            if not isinstance(items, list) or not items:
                return None
            for item in items:
                info = parse_batch(item)
                if info.input_file_id == input_file_id:
                    return info
                if not_before and info.created_at and info.created_at < not_before:
                    return None  # older than the file itself: nothing further back matches
            if not page.get("has_more"):
                return None
            after = parse_batch(items[-1]).id
        return None

    def download(self, file_id: str) -> list[dict[str, Any]]:
        """The parsed lines of a result file (output or error file); for an inline provider,
        the results of the batch `file_id` names, as OpenAI result lines."""
        if self._wire is not None:
            return self._wire.parse_results(self._call("GET", self._wire.results_path(file_id),
                                                       raw=True))
        raw = self._call("GET", f"/files/{file_id}/content", raw=True)
        return list(parse_jsonl(raw.splitlines()))

    def _call(self, method: str, path: str,
              body: Callable[[], Iterable[bytes]] | None = None,
              headers: dict[str, str] | None = None, *, raw: bool = False,
              final: frozenset[int] = frozenset()) -> Any:
        """One request with retries for retryable failures; the decoded JSON (or raw bytes).

        Statuses in `final` are not retried (a 409 from cancel means "already ending").
        """
        return self._retrying(lambda: self._send(method, path, body, headers, raw=raw),
                              f"{method} {path}", final=lambda error: error.status in final)

    def _retrying(self, call: Callable[[], Any], what: str,
                  final: Callable[[ApiError], bool] = lambda error: False) -> Any:
        return call_with_retries(call, what=what, max_attempts=self._max_attempts,
                                 cap=self._backoff_cap_s, final=final, sleep=self._sleep,
                                 rng=self._rng)

    def _send(self, method: str, path: str, body: Callable[[], Iterable[bytes]] | None = None,
              headers: dict[str, str] | None = None, *, raw: bool = False) -> Any:
        all_headers = dict(headers or {})
        if self._auth is not None:
            all_headers.update(self._auth)
        elif self._key:
            all_headers["Authorization"] = f"Bearer {self._key}"
        data: Any = None
        if body is not None:
            parts = body()
            data = parts[0] if isinstance(parts, list) and len(parts) == 1 else parts
        request = urllib.request.Request(self.base_url + path, data=data, method=method,
                                         headers=all_headers)
        try:
            with self._opener.open(request, timeout=self._timeout_s) as response:
                status, reply = response.status, response.read()
                answer_headers = dict(response.headers.items())
        except urllib.error.HTTPError as exc:
            status, reply, answer_headers = exc.code, exc.read(), dict(exc.headers.items())
        except OSError as exc:  # URLError, socket timeouts, refused and reset connections
            if isinstance(getattr(exc, "reason", exc), TimeoutError):
                raise Timeout("the request timed out") from None
            raise TransportError(f"connection error ({type(exc).__name__})") from None
        if raw and 200 <= status < 300:
            return reply
        return check_answer(status, answer_headers, reply)


def open_client(base_url: str, api_key_env: str = "OPENAI_API_KEY",
                api_key_file: str | None = None, api_key_secret: str | None = None,
                provider: str = "openai", model: str | None = None,
                **kwargs: Any) -> BatchClient:
    """A batch client for `provider` (OpenAI's BatchClient, or batch/inline.py's for a
    provider whose batches carry their requests inline, for `model`), with the key found as
    the realtime workers find it (auth/keys.py).

    A remote endpoint without a key is a ConfigError naming where the key was looked for.
    """
    key = require_api_key(base_url, api_key_env, api_key_file, api_key_secret)
    if provider == OPENAI:
        return BatchClient(base_url, key, **kwargs)
    return BatchClient(base_url, key, headers=get_provider(provider).auth_headers(key),
                       wire=inline_wire(provider), model=model or "", **kwargs)
