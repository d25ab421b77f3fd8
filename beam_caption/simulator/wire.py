"""JSON on the wire: fast encode/decode (orjson when installed) and JSON responses.

orjson comes with apache-beam[gcp]; the standard library is the fallback, so the simulator runs
with aiohttp and Pillow alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from beam_caption.simulator.apierror import bad_request

try:
    import orjson

    def dumps(value: Any) -> bytes:
        """Compact JSON bytes."""
        return orjson.dumps(value)

    def loads(data: bytes | str) -> Any:
        """Parse JSON; raises ValueError on malformed input."""
        return orjson.loads(data)

except ImportError:  # pragma: no cover - exercised only without orjson

    def dumps(value: Any) -> bytes:
        """Compact JSON bytes."""
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def loads(data: bytes | str) -> Any:
        """Parse JSON; raises ValueError on malformed input."""
        return json.loads(data)


def json_response(value: Any, status: int = 200,
                  headers: Mapping[str, str] | None = None) -> web.Response:
    """An application/json response with `value` as body."""
    return web.Response(body=dumps(value), status=status, headers=headers,
                        content_type="application/json")


async def read_json(request: web.Request) -> Any:
    """The request body as JSON, or the 400 the API sends for an unparseable body."""
    data = await request.read()
    try:
        return loads(data)
    except ValueError:
        raise bad_request("We could not parse the JSON body of your request. (HINT: This likely "
                          "means you aren't using your HTTP library correctly. The OpenAI API "
                          "expects a JSON payload, but what was sent was not valid JSON.)") \
            from None
