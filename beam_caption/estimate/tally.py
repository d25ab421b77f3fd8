"""The sums over measured inputs (estimate/measure.py) that the estimate pipeline combines into
one and the bill (estimate/bill.py) reads: counts, text tokens and prompt tokens per rule and
--max-side.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from beam_caption.estimate.measure import Measured

MAX_UNREADABLE_EXAMPLES = 10


@dataclass
class Tally:
    """Sums over measured images: counts, text and prompt tokens per (rule_key, max_side)."""

    images: int = 0  # photos and videos: one request each
    videos: int = 0
    video_frames: int = 0  # the images the videos' requests send
    text_tokens: int = 0
    prompt_tokens: Counter[tuple[str, int]] = field(default_factory=Counter)
    unreadable: Counter[str] = field(default_factory=Counter)
    # The first MAX_UNREADABLE_EXAMPLES (uri, code) by uri: the same whatever the merge order.
    examples: list[tuple[str, str]] = field(default_factory=list)

    @property
    def files(self) -> int:
        """Inputs measured: readable images plus unreadable files."""
        return self.images + sum(self.unreadable.values())

    def add(self, item: Measured, keys: list[tuple[str, int]]) -> Tally:
        """Count one measured input (in place); returns self."""
        if item.code is not None:
            self.unreadable[item.code] += 1
            self.examples = sorted({*self.examples, (item.uri, item.code)})[
                :MAX_UNREADABLE_EXAMPLES]
            return self
        self.images += 1
        if item.video_frames:
            self.videos += 1
            self.video_frames += item.video_frames
        self.text_tokens += item.text_tokens
        self.prompt_tokens.update(dict(zip(keys, item.prompt_tokens, strict=True)))
        return self

    def merge(self, other: Tally) -> Tally:
        """Add `other`'s counts (in place); returns self."""
        self.images += other.images
        self.videos += other.videos
        self.video_frames += other.video_frames
        self.text_tokens += other.text_tokens
        self.prompt_tokens.update(other.prompt_tokens)
        self.unreadable.update(other.unreadable)
        self.examples = sorted({*self.examples, *other.examples})[:MAX_UNREADABLE_EXAMPLES]
        return self

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (prompt tokens nested by rule key, then str(max_side))."""
        nested: dict[str, dict[str, int]] = {}
        for (key, side), count in sorted(self.prompt_tokens.items()):
            nested.setdefault(key, {})[str(side)] = count
        return {"images": self.images, "videos": self.videos,
                "video_frames": self.video_frames, "text_tokens": self.text_tokens,
                "prompt_tokens": nested, "unreadable": dict(sorted(self.unreadable.items())),
                "unreadable_examples": [{"uri": u, "code": c} for u, c in self.examples]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tally:
        """The inverse of to_dict."""
        prompt = Counter({(key, int(side)): int(count)
                          for key, sides in data["prompt_tokens"].items()
                          for side, count in sides.items()})
        return cls(images=int(data["images"]), videos=int(data.get("videos", 0)),
                   video_frames=int(data.get("video_frames", 0)),
                   text_tokens=int(data["text_tokens"]),
                   prompt_tokens=prompt, unreadable=Counter(data["unreadable"]),
                   examples=[(e["uri"], e["code"]) for e in data["unreadable_examples"]])
