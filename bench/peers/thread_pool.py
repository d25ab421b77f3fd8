"""Peer: the common script. A concurrent.futures thread pool, one `requests` session per thread,
images shrunk to 512 px exactly as beam-caption does, and a plain retry on 429 and 5xx that
honours Retry-After (what a careful script author adds after the first rate-limit error).

    python bench/peers/thread_pool.py --list L --base-url URL --output DIR [--concurrency 64]
"""

from __future__ import annotations

import concurrent.futures
import json
import random
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    PeerResult,
    caption_of,
    chat_body,
    parse_args,
    prepared_data_url,
    read_paths,
    write_result,
)

MAX_ATTEMPTS = 6
_local = threading.local()


def _session() -> requests.Session:
    """One keep-alive session per thread (requests.Session is not thread-safe)."""
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
        session.trust_env = False  # loopback only: never route through a proxy
        session.headers["Authorization"] = "Bearer bench"
    return session


def caption(url: str, path: str, max_side: int, result: PeerResult,
            lock: threading.Lock) -> str | None:
    """Prepare one image and POST it, retrying 429 and 5xx with backoff; None on failure."""
    body = chat_body(prepared_data_url(path, max_side))
    for attempt in range(MAX_ATTEMPTS):
        with lock:
            result.sent()
        try:
            resp = _session().post(url, json=body, timeout=120)
            status = str(resp.status_code)
        except requests.RequestException as exc:
            resp, status = None, type(exc).__name__
        with lock:
            result.count(status)
        if resp is not None and resp.status_code == 200:
            text = caption_of(resp.json())
            with lock:
                result.done(True)
            return text
        if resp is not None and resp.status_code < 500 and resp.status_code != 429:
            break  # 4xx other than 429: retrying cannot help
        hint = resp.headers.get("retry-after") if resp is not None else None
        time.sleep(float(hint) if hint else random.uniform(0, 0.5 * 2 ** attempt))
    with lock:
        result.done(False)
    return None


def main(argv: list[str] | None = None) -> int:
    """Caption the list with a thread pool; write captions.jsonl and result.json."""
    args = parse_args(__doc__.splitlines()[0], argv)
    paths = read_paths(args.list, args.limit)
    url = args.base_url.rstrip("/") + "/chat/completions"
    result, lock = PeerResult(), threading.Lock()
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.concurrency) as pool, \
            open(args.output / "captions.jsonl", "w", encoding="utf-8") as out:
        captions = pool.map(lambda p: caption(url, p, args.max_side, result, lock), paths)
        for path, text in zip(paths, captions, strict=True):
            out.write(json.dumps({"uri": path, "caption": text}) + "\n")
    write_result(args.output, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
