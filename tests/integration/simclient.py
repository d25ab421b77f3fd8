"""A tiny blocking HTTP client and request builders for the simulator tests.

http.client on purpose: the tests need to see raw statuses, headers, truncated bodies and dropped
connections exactly as they arrive, with no retries or proxies in between.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from PIL import Image


@dataclass
class Reply:
    """One HTTP answer."""

    status: int
    headers: dict[str, str]
    raw: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.raw)

    @property
    def error(self) -> dict[str, Any]:
        """The OpenAI error object of an error answer."""
        return self.json()["error"]


def request(base_url: str, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 10) -> Reply:
    """Send one request to base_url + path on a fresh connection; return the raw reply."""
    parts = urlsplit(base_url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, parts.path + path, body=body, headers=headers or {})
        resp = conn.getresponse()
        raw = resp.read()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, raw)
    finally:
        conn.close()


def post_json(base_url: str, path: str, body: Any, key: str | None = "test-key",
              timeout: float = 10) -> Reply:
    """POST a JSON body (with a bearer key unless key is None)."""
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return request(base_url, "POST", path, json.dumps(body).encode(), headers, timeout)


def get(base_url: str, path: str, key: str | None = "test-key") -> Reply:
    """GET with a bearer key."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return request(base_url, "GET", path, None, headers)


def chat(base_url: str, body: dict[str, Any], key: str | None = "test-key",
         timeout: float = 10) -> Reply:
    """POST /chat/completions."""
    return post_json(base_url, "/chat/completions", body, key, timeout)


def image_bytes(width: int = 64, height: int = 48, colour: tuple[int, int, int] = (30, 80, 200),
                fmt: str = "JPEG") -> bytes:
    """A solid-colour image encoded as `fmt`."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, fmt)
    return buf.getvalue()


def data_url(data: bytes, mime: str = "image/jpeg") -> str:
    """A base64 data URL."""
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def chat_body(model: str = "gpt-4.1-nano", image: bytes | None = None, detail: str | None = None,
              prompt: str = "Describe this photo in one sentence.",
              **params: Any) -> dict[str, Any]:
    """A captioning request: one user message with a text part and (by default) one image."""
    image_url: dict[str, Any] = {"url": data_url(image if image is not None else image_bytes())}
    if detail is not None:
        image_url["detail"] = detail
    content = [{"type": "text", "text": prompt}, {"type": "image_url", "image_url": image_url}]
    return {"model": model, "messages": [{"role": "user", "content": content}], **params}


def multipart(fields: dict[str, str], filename: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body with text `fields` and one file; returns (body, type)."""
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for name, value in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                  f"{value}\r\n".encode())
    out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
              f'filename="{filename}"\r\nContent-Type: application/jsonl\r\n\r\n'.encode())
    out.write(data + f"\r\n--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def upload(base_url: str, data: bytes, purpose: str = "batch",
           key: str = "test-key") -> Reply:
    """POST /files."""
    body, ctype = multipart({"purpose": purpose}, "input.jsonl", data)
    return request(base_url, "POST", "/files", body,
                   {"Content-Type": ctype, "Authorization": f"Bearer {key}"})
