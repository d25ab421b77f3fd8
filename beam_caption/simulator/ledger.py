"""The ledger (what GET /_sim/stats returns) and the per-request JSON-lines log.

Billed means the client received a complete 200 answer: "ok" and "content_filter" outcomes and
the successful lines of a completed batch. Broken JSON, dropped connections and timeouts are not
billed. `successes_by_image` counts billed answers per image sha256, so a test can prove no image
was paid for twice. Only /v1/chat/completions requests count in `requests`; batch lines count in
`batch_lines`, and their tokens and dollars under "batch" (at the table's batch discount).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from typing import IO, Any

from beam_caption.cost.pricing import ModelPrice

OUTCOMES = ("ok", "rate_limited", "server_error", "timeout", "disconnect", "broken_json",
            "insufficient_quota", "content_filter", "bad_request", "unauthorized", "not_found")
_DATA_URL = re.compile(r"^(data:[^,]*,)(.{32}).+$", re.DOTALL)


class Ledger:
    """Counters of requests, tokens, dollars and billed answers per image."""

    def __init__(self, prices: dict[str, ModelPrice]) -> None:
        self.prices = prices
        self.reset()

    def reset(self) -> None:
        """Zero every counter."""
        self.by_outcome: Counter[str] = Counter({name: 0 for name in OUTCOMES})
        self.tokens = {mode: {"prompt": 0, "completion": 0, "cached": 0}
                       for mode in ("realtime", "batch")}
        self.cost = {"realtime": 0.0, "batch": 0.0}
        self.by_image: Counter[str] = Counter()
        self.batch_lines: Counter[str] = Counter({"ok": 0, "failed": 0})

    def count(self, outcome: str) -> None:
        """Count one chat request under `outcome` (one of OUTCOMES)."""
        self.by_outcome[outcome] += 1

    def bill(self, model: str, usage: dict[str, Any], images: list[str],
             batch: bool = False) -> float:
        """Add one billed answer's tokens and cost; returns its cost in USD."""
        mode = "batch" if batch else "realtime"
        prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
        cached = usage.get("prompt_tokens_details", {}).get("cached_tokens", 0)
        bucket = self.tokens[mode]
        bucket["prompt"] += prompt
        bucket["completion"] += completion
        bucket["cached"] += cached
        price = self.prices.get(model)
        # Models added with --model have no price: they are free in the ledger.
        cost = price.cost_usd(prompt, completion, cached, batch=batch) if price else 0.0
        self.cost[mode] += cost
        self.by_image.update(images)
        return cost

    def snapshot(self) -> dict[str, Any]:
        """The /_sim/stats document."""
        return {
            "requests": {"total": sum(self.by_outcome.values()),
                         "by_outcome": dict(self.by_outcome)},
            "tokens": {mode: dict(v) for mode, v in self.tokens.items()},
            "cost_usd": {"realtime": round(self.cost["realtime"], 9),
                         "batch": round(self.cost["batch"], 9),
                         "total": round(self.cost["realtime"] + self.cost["batch"], 9)},
            "successes_by_image": dict(self.by_image),
            "batch_lines": dict(self.batch_lines),
        }


def redact(value: Any) -> Any:
    """A copy of a request body with every data URL's payload cut to 32 chars + '...' (and the
    base64 `data` of Anthropic's image sources and Gemini's inline_data alike)."""
    if isinstance(value, dict):
        return {k: (v[:32] + "..." if k == "data" and isinstance(v, str) and len(v) > 32
                    else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str) and value.startswith("data:"):
        return _DATA_URL.sub(r"\1\2...", value)
    return value


class RequestLog:
    """One JSON line per request (--log FILE); line-buffered so a test can read it live."""

    def __init__(self, path: str | None) -> None:
        self._fh: IO[str] | None = open(path, "a", encoding="utf-8", buffering=1) if path \
            else None  # noqa: SIM115 - closed in close()

    def write(self, path: str, status: int, outcome: str, model: str | None, request: Any,
              usage: dict[str, Any] | None, latency_ms: float, started: float) -> None:
        """Append one record (no-op without a log file). The request body is redacted.

        ``started`` and ``ts`` are wall-clock seconds (arrival and answer) to the microsecond,
        so in-flight counts rebuilt from the log do not overlap a request with the one whose
        answer freed its slot a fraction of a millisecond earlier."""
        if self._fh is None:
            return
        record = {"started": round(started, 6), "ts": round(time.time(), 6), "path": path,
                  "status": status,
                  "outcome": outcome, "model": model, "request": redact(request),
                  "usage": usage, "latency_ms": round(latency_ms, 3)}
        self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")

    def close(self) -> None:
        """Close the file."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None
