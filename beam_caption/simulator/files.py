"""The Files API subset the Batch API needs: upload (purpose=batch), metadata and content.

Uploads are read as a stream and refused beyond the batch file limit (200 MB by default) before
they are held in memory in full.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web

from beam_caption.simulator.apierror import bad_request, invalid_value, missing
from beam_caption.simulator.state import STATE
from beam_caption.simulator.stores import IdStore
from beam_caption.simulator.wire import json_response

_CHUNK = 1 << 16


@dataclass(frozen=True)
class StoredFile:
    """One file held in memory."""

    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def object(self) -> dict[str, Any]:
        """The OpenAIFile object."""
        return {"id": self.id, "object": "file", "bytes": len(self.data),
                "created_at": self.created_at, "filename": self.filename,
                "purpose": self.purpose, "status": "processed"}


class FileStore(IdStore[StoredFile]):
    """Files by id."""

    def __init__(self) -> None:
        super().__init__("file-sim", "File", "id")

    def add(self, filename: str, purpose: str, data: bytes) -> StoredFile:
        """Store `data` and return its record."""
        file_id = self.new_id()
        return self.put(file_id, StoredFile(file_id, filename, purpose, data, int(time.time())))


FILES = web.AppKey("sim_files", FileStore)


async def upload(request: web.Request) -> web.Response:
    """POST /v1/files (multipart/form-data with `purpose` and `file`)."""
    limit = request.app[STATE].config.batch_max_bytes
    if not request.content_type.startswith("multipart/"):
        raise bad_request("Invalid Content-Type: expected multipart/form-data.", "file")
    reader = await request.multipart()
    purpose: str | None = None
    filename, data = None, None
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            continue
        if part.name == "purpose":
            purpose = (await part.text()).strip()
        elif part.name == "file":
            filename = part.filename or "upload.jsonl"
            data = await _read_limited(part, limit)
    if purpose is None:
        raise missing("purpose")
    if purpose != "batch":
        # The simulator serves the Batch API only; other purposes exist in the real API.
        raise invalid_value("purpose", purpose, ("batch",))
    if data is None:
        raise missing("file")
    stored = request.app[FILES].add(filename or "upload.jsonl", purpose, data)
    return json_response(stored.object())


async def _read_limited(part: BodyPartReader, limit: int) -> bytes:
    chunks, size = [], 0
    while chunk := await part.read_chunk(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise bad_request(f"File is too large: batch input files may be at most {limit} "
                              "bytes.", "file", "file_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


async def retrieve(request: web.Request) -> web.Response:
    """GET /v1/files/{id}."""
    return json_response(request.app[FILES].get(request.match_info["file_id"]).object())


async def content(request: web.Request) -> web.Response:
    """GET /v1/files/{id}/content: the raw bytes."""
    file = request.app[FILES].get(request.match_info["file_id"])
    return web.Response(body=file.data, content_type="application/octet-stream")
