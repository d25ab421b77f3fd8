"""Peer: the seed article's script. One asyncio.gather over aiohttp requests for the whole list,
each carrying the base64 of the full image file; no retries, no limit but aiohttp's default pool.

This is the approach beam-caption started from (and what most blog posts show): it is fast
while everything fits in memory, because every request is built before the first one completes:
gather schedules all coroutines, and each reads and encodes its file before its first await.

    python bench/peers/seed_gather.py --list L --base-url URL --output DIR
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    MIME,
    PeerResult,
    caption_of,
    chat_body,
    parse_args,
    read_paths,
    write_result,
)


async def caption(session: aiohttp.ClientSession, url: str, path: str,
                  result: PeerResult) -> str | None:
    """Caption one image: base64 of the whole file, one POST, no retry (as in the article)."""
    with open(path, "rb") as handle:
        encoded = base64.b64encode(handle.read()).decode("ascii")
    mime = MIME.get(Path(path).suffix.lower(), "image/jpeg")
    body = chat_body(f"data:{mime};base64,{encoded}")
    result.sent()
    try:
        async with session.post(url, json=body) as resp:
            result.count(str(resp.status))
            if resp.status != 200:
                result.done(False)
                return None
            answer = await resp.json()
    except aiohttp.ClientError as exc:
        result.count(type(exc).__name__)
        result.done(False)
        return None
    result.done(True)
    return caption_of(answer)


async def caption_all(paths: list[str], base_url: str) -> tuple[list[str | None], PeerResult]:
    """Every image at once with asyncio.gather; returns the captions in input order."""
    result = PeerResult()
    url = base_url.rstrip("/") + "/chat/completions"
    headers = {"Authorization": "Bearer bench"}
    # aiohttp's defaults: a pool of 100 connections and a 5-minute total timeout per request.
    async with aiohttp.ClientSession(headers=headers) as session:
        captions = await asyncio.gather(*(caption(session, url, p, result) for p in paths))
    return list(captions), result


def main(argv: list[str] | None = None) -> int:
    """Caption the list, write captions.jsonl and result.json."""
    args = parse_args(__doc__.splitlines()[0], argv, concurrency=None)
    paths = read_paths(args.list, args.limit)
    captions, result = asyncio.run(caption_all(paths, args.base_url))
    with open(args.output / "captions.jsonl", "w", encoding="utf-8") as out:
        for path, text in zip(paths, captions, strict=True):
            out.write(json.dumps({"uri": path, "caption": text}) + "\n")
    write_result(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
