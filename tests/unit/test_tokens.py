"""Token rules against the documented examples (OpenAI vision guide) and a published bill."""

from __future__ import annotations

import pytest

from beam_caption.cost import tokens
from beam_caption.cost.pricing import load_prices

PRICES = load_prices()


@pytest.mark.parametrize(("size", "patches"), [
    ((1024, 1024), 1024),  # 32 x 32 patches, under the budget: no shrink
    ((1800, 2400), 1452),  # 4,225 patches > 1,536: shrunk, then fitted to whole patches
    ((32, 32), 1),
    ((33, 1), 2),          # partial patches count
])
def test_patch_rule_documented_examples(size: tuple[int, int], patches: int) -> None:
    assert tokens.patch_count(*size) == patches


@pytest.mark.parametrize(("size", "detail", "expected"), [
    ((1024, 1024), "high", 765),   # 85 + 170 * 4 tiles
    ((2048, 4096), "high", 1105),  # fit in 2048 -> 1024x2048, shortest side 768 -> 6 tiles
    ((2048, 4096), "low", 85),     # low detail costs the base whatever the size
    ((4096, 8192), "auto", 1105),  # auto is estimated as high
])
def test_tile_rule_gpt_4o(size: tuple[int, int], detail: str, expected: int) -> None:
    rule = PRICES["gpt-4o"].image_tokens
    assert rule["rule"] == "tile"
    assert tokens.image_tokens(rule, *size, detail=detail) == expected


def test_patch_rule_multiplier_matches_published_gpt_4_1_nano_measurement() -> None:
    # Published measurement: a 1086x724 photo sent to gpt-4.1-nano billed about 1,924 image
    # tokens. 34 x 23 = 782 patches, times the nano multiplier 2.46 = 1,923.7.
    rule = PRICES["gpt-4.1-nano"].image_tokens
    assert tokens.image_tokens(rule, 1086, 724) == pytest.approx(1924, abs=2)


def test_patch_multipliers_per_family() -> None:
    rules = {m: PRICES[m].image_tokens for m in ("gpt-4.1-mini", "gpt-5.4-nano", "o4-mini")}
    assert tokens.image_tokens(rules["gpt-4.1-mini"], 1024, 1024) == 1659  # ceil(1024 * 1.62)
    assert tokens.image_tokens(rules["gpt-5.4-nano"], 1024, 1024) == 2520  # ceil(1024 * 2.46)
    assert tokens.image_tokens(rules["o4-mini"], 1024, 1024) == 1762      # ceil(1024 * 1.72)


def test_patch_budget_caps_huge_images() -> None:
    assert tokens.patch_count(12000, 9000) <= tokens.DEFAULT_PATCH_BUDGET
    assert tokens.patch_count(12000, 9000) > 1400


def test_text_estimate_is_bytes_over_four() -> None:
    assert tokens.text_tokens("") == 0
    assert tokens.text_tokens("abcd") == 1
    assert tokens.text_tokens("abcde") == 2
    assert tokens.text_tokens("é" * 4) == 2  # UTF-8 bytes, not characters
    # 3 tokens per message and 3 to prime the reply, as in OpenAI's cookbook counter.
    assert tokens.messages_text_tokens(["abcd"], 1) == 1 + 3 + 3


def test_bad_sizes_and_rules_raise() -> None:
    with pytest.raises(ValueError, match="positive"):
        tokens.patch_count(0, 10)
    with pytest.raises(ValueError, match="unknown image token rule"):
        tokens.image_tokens({"rule": "hexagon"}, 10, 10)


def test_a_chat_request_is_its_texts_overhead_and_images() -> None:
    # "Describe this photo in one sentence." = 36 bytes = 9 tokens, + 3 for its message + 3 to
    # prime the reply; one 1024x1024 image at gpt-4o high = 765 (documented): 780 in all.
    rule = PRICES["gpt-4o"].image_tokens
    assert tokens.chat_prompt_tokens(rule, ["Describe this photo in one sentence."], 1,
                                     [(1024, 1024)], "high") == 780
    # No rule (a model missing from the price table): 32 px patches at multiplier 1.
    assert tokens.chat_prompt_tokens(None, ["abcd"], 1, [(64, 64)]) == 1 + 3 + 3 + 4
