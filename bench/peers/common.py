"""What every peer shares: the request (same prompt, model and answer cap as beam-caption's
defaults), the 512 px preparation where a peer allows it, argument parsing and the result file.

Peers import beam_caption only for its defaults and for prepare_image: the point of the
comparison is the orchestration (how requests are scheduled, how much is held in memory), not
the image code, so where a peer prepares images it prepares them exactly as beam-caption does.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from beam_caption.inputs.images import PrepareSettings, prepare_image  # noqa: E402
from beam_caption.options import DEFAULT_MODEL, DEFAULT_PROMPT  # noqa: E402

MAX_OUTPUT_TOKENS = 60  # beam-caption's --max-output-tokens default
MIME = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


@dataclass
class PeerResult:
    """What a peer reports: answers, failures by HTTP status (or exception name), its clock."""

    ok: int = 0
    failed: int = 0
    requests: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    first_send: float | None = None  # time.time() of the first request
    last_done: float | None = None  # time.time() of the last answer

    def count(self, status: str) -> None:
        """Count one attempt's outcome (an HTTP status or an exception name)."""
        self.requests += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def sent(self) -> None:
        """Note that a request is about to go out."""
        if self.first_send is None:
            self.first_send = time.time()

    def done(self, ok: bool) -> None:
        """Note one image's final outcome."""
        self.last_done = time.time()
        if ok:
            self.ok += 1
        else:
            self.failed += 1


def parse_args(description: str, argv: list[str] | None = None,
               concurrency: int | None = 64) -> argparse.Namespace:
    """The peers' common flags: --list, --base-url, --output, --max-side, --concurrency."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--list", required=True, type=Path, help="file of image paths, one a line")
    parser.add_argument("--base-url", required=True, help="OpenAI-compatible base URL (loopback)")
    parser.add_argument("--output", required=True, type=Path, help="directory for results")
    parser.add_argument("--max-side", type=int, default=512, help="0 sends the original file")
    if concurrency is not None:
        parser.add_argument("--concurrency", type=int, default=concurrency)
    parser.add_argument("--limit", type=int, default=0, help="only the first N images (0: all)")
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    return args


def read_paths(listing: Path, limit: int = 0) -> list[str]:
    """The image paths of a list file (the first `limit` when limit > 0)."""
    paths = [line for line in listing.read_text().splitlines() if line.strip()]
    return paths[:limit] if limit else paths


def prepared_data_url(path: str, max_side: int) -> str:
    """The image as a data URL: shrunk like beam-caption's (max_side > 0) or the file as is."""
    data = Path(path).read_bytes()
    if not max_side:
        mime = MIME.get(Path(path).suffix.lower(), "image/jpeg")
        return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    jpeg = prepare_image(path, data, PrepareSettings(max_side=max_side)).jpeg
    return f"data:image/jpeg;base64,{base64.b64encode(jpeg).decode('ascii')}"


def chat_body(data_url: str) -> dict[str, Any]:
    """The chat.completions body beam-caption sends by default, for one image."""
    return {
        "model": DEFAULT_MODEL,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": DEFAULT_PROMPT},
            {"type": "image_url", "image_url": {"url": data_url, "detail": "auto"}},
        ]}],
        "max_completion_tokens": MAX_OUTPUT_TOKENS,
    }


def caption_of(answer: dict[str, Any]) -> str:
    """The caption text of a chat.completions answer."""
    return answer["choices"][0]["message"]["content"] or ""


def write_result(output: Path, result: PeerResult) -> None:
    """result.json in `output`: what bench/run.py reads after the peer exits."""
    (output / "result.json").write_text(json.dumps(asdict(result)))
