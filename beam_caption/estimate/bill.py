"""The bill from an estimate's token tally: the chosen model, alternatives, --max-side choices.

Pure arithmetic over the tally (estimate/tally.py) that the estimate pipeline (estimate/pipeline.py)
produces; no I/O. cli/estimate.py prints the bill document this builds (format_bill).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from beam_caption.cost.pricing import ModelPrice, find_price
from beam_caption.estimate.measure import rule_key
from beam_caption.estimate.tally import Tally

# A one-sentence caption is typically 15-30 English words; at ~1.3 tokens per word that is 20-40
# tokens. 30 is the middle. Reasoning models may add hidden reasoning tokens, which the API bills
# as output: the worst case (every answer at --max-output-tokens) bounds both.
DEFAULT_EXPECTED_OUTPUT_TOKENS = 30
# The --max-side values every estimate compares (plus the chosen one): original, 512, 768.
COMPARE_SIDES = (0, 512, 768)
# How many alternative models the default comparison shows (two cheaper, two dearer if possible).
DEFAULT_COMPARE_COUNT = 4


@dataclass(frozen=True)
class BillSettings:
    """The choices the bill depends on (the pipeline's tally does not)."""

    model: str
    max_side: int
    expected_output_tokens: int = DEFAULT_EXPECTED_OUTPUT_TOKENS
    max_output_tokens: int = 60
    compare_models: tuple[str, ...] | None = None  # None: DEFAULT_COMPARE_COUNT neighbours
    # The chosen model's price as a run would bill it (--price-as, a gateway or dated name);
    # None: looked up by name in the table.
    price: ModelPrice | None = None


def cost_line(tally: Tally, scale: float, model: str, price: ModelPrice | None, max_side: int,
              expected_output: int, worst_output: int) -> dict[str, Any]:
    """Tokens and dollars of one (model, --max-side) variant, scaled by `scale` (sampling)."""
    rule = price.image_tokens if price else None
    images = tally.images * scale
    prompt = tally.prompt_tokens.get((rule_key(rule), max_side), 0) * scale
    text = tally.text_tokens * scale
    line: dict[str, Any] = {
        "model": model, "provider": price.provider if price else None, "max_side": max_side,
        "images": round(images),
        "input_tokens": round(prompt), "text_tokens": round(text),
        "image_tokens": round(prompt - text),
        "input_tokens_per_image": round(prompt / images, 1) if images else None,
        "output_tokens": round(images * expected_output),
        "output_tokens_worst": round(images * worst_output),
    }
    money = ("input_usd", "realtime_usd", "batch_usd", "realtime_usd_worst", "batch_usd_worst",
             "realtime_usd_per_1000", "batch_usd_per_1000")
    if price is None:
        return {**line, **dict.fromkeys(money)}
    # Cost is linear in tokens, so the cost of the sums is the sum of per-image costs.
    out, worst = images * expected_output, images * worst_output
    realtime, batch = price.cost_usd(prompt, out), price.cost_usd(prompt, out, batch=True)
    per_k = 1000 / images if images else 0.0
    return {**line, "input_usd": price.cost_usd(prompt, 0), "realtime_usd": realtime,
            "batch_usd": batch, "realtime_usd_worst": price.cost_usd(prompt, worst),
            "batch_usd_worst": price.cost_usd(prompt, worst, batch=True),
            "realtime_usd_per_1000": realtime * per_k, "batch_usd_per_1000": batch * per_k}


def default_compare_models(unit_cost: Mapping[str, float | None], chosen: str,
                           count: int = DEFAULT_COMPARE_COUNT) -> list[str]:
    """Alternatives to `chosen`: the nearest cheaper and dearer models (half each if possible).

    `unit_cost` is each model's estimated cost per image (or per 1,000; None when unpriced); an
    unpriced chosen model is compared with the `count` cheapest. Ties go by name (stable).
    """
    ranked = sorted((cost, name) for name, cost in unit_cost.items()
                    if cost is not None and name != chosen)
    own = unit_cost.get(chosen)
    if own is None:
        return [name for _, name in ranked[:count]]
    cheaper = [name for cost, name in ranked if cost <= own]
    dearer = [name for cost, name in ranked if cost > own]
    n_dearer = min(len(dearer), max(count // 2, count - len(cheaper)))
    n_cheaper = min(len(cheaper), count - n_dearer)
    return cheaper[len(cheaper) - n_cheaper:] + dearer[:n_dearer]


def bill_document(tally_dict: Mapping[str, Any], prices: Mapping[str, ModelPrice],
                  bill: BillSettings) -> dict[str, Any]:
    """The bill as a JSON-ready dict (estimate.json): counts, the chosen variant, and the
    comparisons by model and by --max-side."""
    tally = Tally.from_dict(tally_dict)
    measured = tally.files
    files_total = int(tally_dict.get("files_total", measured))
    scale = files_total / measured if measured else 1.0
    expected = min(bill.expected_output_tokens, bill.max_output_tokens)
    price = bill.price or find_price(prices, bill.model)

    def line(model: str, model_price: ModelPrice | None, side: int) -> dict[str, Any]:
        return cost_line(tally, scale, model, model_price, side, expected, bill.max_output_tokens)

    every_model = {name: line(name, p, bill.max_side) for name, p in prices.items()}
    chosen = every_model.get(bill.model) or line(bill.model, price, bill.max_side)
    compare = bill.compare_models
    if compare is None:
        per_1000 = {name: ln["realtime_usd_per_1000"]
                    for name, ln in {**every_model, bill.model: chosen}.items()}
        compare = tuple(default_compare_models(per_1000, bill.model))
    models = [chosen, *(every_model[name] for name in compare if name != bill.model)]
    by_provider = cheapest_by_provider(every_model.values())
    sides = sorted({*COMPARE_SIDES, bill.max_side}, key=lambda s: (s == 0, s))
    sample = tally_dict.get("sample")
    return {
        "model": bill.model, "max_side": bill.max_side, "priced": price is not None,
        "files": files_total, "images": chosen["images"],
        "videos": round(tally.videos * scale), "video_frames": round(tally.video_frames * scale),
        "skipped": dict(sorted(tally_dict.get("skipped", {}).items())),
        # --near-dedupe: requests it may save, from 0 (no burst looks alike) to this (every
        # photo taken seconds after another by the same camera does); not scaled by a sample.
        "near_duplicates": ({"min": 0, "max": tally_dict["near_duplicates_max"]}
                            if "near_duplicates_max" in tally_dict else None),
        "unreadable": round(files_total - tally.images * scale),
        "unreadable_by_code": dict(tally.unreadable),
        "unreadable_examples": [{"uri": u, "code": c} for u, c in tally.examples],
        "sample": {"requested": sample, "measured": measured, "files_total": files_total,
                   "scale": scale} if sample else None,
        "expected_output_tokens": expected, "max_output_tokens": bill.max_output_tokens,
        "chosen": chosen,
        "by_model": sorted(models, key=_by_cost),
        "by_provider": by_provider,
        "by_max_side": [line(bill.model, price, side) for side in sides],
        "warnings": _warnings(bill, price, tally),
    }


def cheapest_by_provider(lines: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The cheapest priced model of each provider (openai, anthropic, gemini, ...) for these
    images, cheapest first: the one table that compares the providers with each other."""
    best: dict[str, Mapping[str, Any]] = {}
    for line in lines:
        provider = line.get("provider")
        if provider is None or line["realtime_usd"] is None:
            continue
        if provider not in best or _by_cost(line) < _by_cost(best[provider]):
            best[provider] = line
    return sorted((dict(line) for line in best.values()), key=_by_cost)


def _by_cost(line: Mapping[str, Any]) -> tuple[bool, float, str]:
    cost = line["realtime_usd"]
    return cost is None, cost or 0.0, line["model"]


def _warnings(bill: BillSettings, price: ModelPrice | None, tally: Tally) -> list[str]:
    notes = []
    if price is None:
        notes.append(f"no price for model {bill.model} in the price table: costs are unknown "
                     "(add it with --prices FILE); image tokens are estimated as 32 px patches")
    if bill.expected_output_tokens > bill.max_output_tokens:
        notes.append(f"--expected-output-tokens {bill.expected_output_tokens} is above "
                     f"--max-output-tokens {bill.max_output_tokens}: using "
                     f"{bill.max_output_tokens}")
    if not tally.images:
        notes.append("no readable images: nothing to estimate")
    return notes
