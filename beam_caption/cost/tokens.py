"""Token estimates: image tokens by the published per-model rules, and a text estimate.

One implementation serves the engine's tokens-per-minute bucket, the `estimate` command, the cost
columns' `estimated_prompt_tokens` and the simulator's usage accounting, so the estimate and the
simulated bill can only disagree where the real API would (the length of the generated answer).

Image rules (OpenAI vision guide):
- patch models (gpt-4.1-mini/nano, gpt-5*-mini/nano, o4-mini): count 32x32 px patches; if more than
  the budget (1,536), shrink the image so that it fits, then multiply by the model's multiplier.
- tile models (gpt-4o, gpt-4.1, gpt-5): detail "low" costs the base; "high" first fits the image in
  2048x2048, then scales the shortest side down to 768, and adds tile tokens per 512 px tile.
  "auto" is estimated as "high" (the conservative choice: the API decides per image).
- area models (Anthropic's Claude, vision guide): an image whose long side exceeds 1,568 px or
  whose area exceeds about 1.15 megapixels is first downscaled (aspect kept) until it fits; then
  it costs about width x height / 750 tokens.
- gemini_tile models (Gemini API, "Understand and count tokens",
  https://ai.google.dev/gemini-api/docs/tokens): an image with both sides at most 384 px costs
  258 tokens; a larger one is scaled and cropped into 768x768 tiles of 258 tokens each, counted
  here as ceil(w / 768) x ceil(h / 768). `media_resolution`
  (https://ai.google.dev/gemini-api/docs/media-resolution) can cap the tokens per image; the
  requests beam-caption sends leave it at the model's default, which is this rule. A price-table
  entry may set `per_image` to a fixed count instead (the Gemini 3 media-resolution budgets).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# Text estimate: ~4 UTF-8 bytes per token for English prose, the rule of thumb OpenAI publishes.
BYTES_PER_TOKEN = 4
# Chat formatting overhead, as in OpenAI's cookbook token counter: each message costs a few tokens
# for its role and delimiters, and every reply is primed with a few more.
TOKENS_PER_MESSAGE = 3
TOKENS_REPLY_PRIMING = 3

DEFAULT_PATCH_PX = 32
DEFAULT_PATCH_BUDGET = 1536


def text_tokens(text: str) -> int:
    """Estimate the tokens of `text`: ceil(UTF-8 bytes / 4), at least 1 for non-empty text."""
    if not text:
        return 0
    return max(1, math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN))


def patch_count(width: int, height: int, patch_px: int = DEFAULT_PATCH_PX,
                budget: int = DEFAULT_PATCH_BUDGET) -> int:
    """Number of `patch_px` patches an image costs under the patch rule, after the budget shrink.

    >>> patch_count(1024, 1024)
    1024
    >>> patch_count(1800, 2400)
    1452
    """
    _check_size(width, height)
    patches = math.ceil(width / patch_px) * math.ceil(height / patch_px)
    if patches <= budget:
        return patches
    # Shrink so the area fits the budget, then shrink a little more so a whole number of patches
    # fits along the tighter side (the published algorithm).
    ratio = math.sqrt(patch_px * patch_px * budget / (width * height))
    w_patches = width * ratio / patch_px
    h_patches = height * ratio / patch_px
    ratio *= min(math.floor(w_patches) / w_patches, math.floor(h_patches) / h_patches)
    resized_w = width * ratio
    resized_h = height * ratio
    return min(budget, math.ceil(resized_w / patch_px) * math.ceil(resized_h / patch_px))


def tile_count(width: int, height: int) -> int:
    """Number of 512 px tiles under the tile rule at detail "high".

    >>> tile_count(1024, 1024)
    4
    >>> tile_count(2048, 4096)
    6
    """
    _check_size(width, height)
    w, h = float(width), float(height)
    fit = min(1.0, 2048 / max(w, h))
    w, h = w * fit, h * fit
    shrink = min(1.0, 768 / min(w, h))
    w, h = w * shrink, h * shrink
    return math.ceil(w / 512) * math.ceil(h / 512)


# Anthropic's downscale thresholds and its tokens-per-pixel rule (vision guide).
AREA_MAX_LONG_SIDE = 1568
AREA_MAX_PIXELS = 1_150_000
AREA_PX_PER_TOKEN = 750
# Gemini: images with both sides up to SMALL_PX cost one tile; larger ones TILE_PX tiles.
GEMINI_SMALL_PX = 384
GEMINI_TILE_PX = 768
GEMINI_TILE_TOKENS = 258
IMAGE_RULES = ("patch", "tile", "area", "gemini_tile")


def area_size(width: int, height: int, max_long_side: int = AREA_MAX_LONG_SIDE,
              max_pixels: int = AREA_MAX_PIXELS) -> tuple[int, int]:
    """The size an area-rule provider (Anthropic) resizes an image to before counting it.

    >>> area_size(4032, 3024)
    (1238, 928)
    >>> area_size(800, 600)
    (800, 600)
    """
    _check_size(width, height)
    scale = min(1.0, max_long_side / max(width, height),
                math.sqrt(max_pixels / (width * height)))
    if scale >= 1.0:
        return width, height
    return max(1, math.floor(width * scale)), max(1, math.floor(height * scale))


def area_tokens(width: int, height: int, rule: Mapping[str, Any] | None = None) -> int:
    """Tokens of one image under the area rule: ceil(w x h / 750) after the downscale."""
    rule = rule or {}
    w, h = area_size(width, height, int(rule.get("max_long_side", AREA_MAX_LONG_SIDE)),
                     int(rule.get("max_pixels", AREA_MAX_PIXELS)))
    return math.ceil(w * h / float(rule.get("px_per_token", AREA_PX_PER_TOKEN)))


def gemini_tiles(width: int, height: int, small_px: int = GEMINI_SMALL_PX,
                 tile_px: int = GEMINI_TILE_PX) -> int:
    """Tiles one image costs under the gemini_tile rule (1 for a small image).

    >>> gemini_tiles(384, 300), gemini_tiles(512, 384), gemini_tiles(1600, 1200)
    (1, 1, 6)
    """
    _check_size(width, height)
    if width <= small_px and height <= small_px:
        return 1
    return math.ceil(width / tile_px) * math.ceil(height / tile_px)


def image_tokens(rule: Mapping[str, Any], width: int, height: int, detail: str = "auto") -> int:
    """Prompt tokens one image costs under `rule` (a price-table `image_tokens` entry)."""
    kind = rule.get("rule")
    if kind == "area":
        return area_tokens(width, height, rule)
    if kind == "gemini_tile":
        if rule.get("per_image"):
            return int(rule["per_image"])
        tiles = gemini_tiles(width, height, int(rule.get("small_px", GEMINI_SMALL_PX)),
                             int(rule.get("tile_px", GEMINI_TILE_PX)))
        return tiles * int(rule.get("tile", GEMINI_TILE_TOKENS))
    if kind == "patch":
        patches = patch_count(width, height, int(rule.get("patch_px", DEFAULT_PATCH_PX)),
                              int(rule.get("budget", DEFAULT_PATCH_BUDGET)))
        return math.ceil(patches * float(rule.get("multiplier", 1.0)))
    if kind == "tile":
        base = int(rule["base"])
        if detail == "low":
            return base
        return base + int(rule["tile"]) * tile_count(width, height)
    raise ValueError(f"unknown image token rule {kind!r} (expected one of {IMAGE_RULES})")


def _check_size(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")


def messages_text_tokens(texts: list[str], n_messages: int) -> int:
    """Text part of a chat prompt: the texts plus per-message and reply-priming overhead."""
    overhead = TOKENS_PER_MESSAGE * n_messages + TOKENS_REPLY_PRIMING
    return sum(text_tokens(t) for t in texts) + overhead


def chat_prompt_tokens(rule: Mapping[str, Any] | None, texts: list[str], n_messages: int,
                       images: list[tuple[int, int]], detail: str = "auto") -> int:
    """Estimated prompt tokens of a chat request: its texts, message overhead and images.

    `images` are the (width, height) of the images as sent. Without an image rule (an unknown
    model) images are estimated with the most common rule, 32 px patches at multiplier 1.
    """
    image_rule = rule or {"rule": "patch", "patch_px": DEFAULT_PATCH_PX,
                          "budget": DEFAULT_PATCH_BUDGET, "multiplier": 1.0}
    return messages_text_tokens(texts, n_messages) + sum(
        image_tokens(image_rule, w, h, detail) for w, h in images)
