"""The estimate's parts without a pipeline: sent size, header reads, tokens, tally, the bill."""

from __future__ import annotations

import dataclasses
import io
import json
import struct
from pathlib import Path

import pytest
from PIL import Image

from beam_caption.cli import build_parser
from beam_caption.cli import main as cli_main
from beam_caption.cli.estimate import run_config
from beam_caption.config import CaptionConfig
from beam_caption.cost.pricing import load_prices
from beam_caption.estimate import bill
from beam_caption.estimate import measure as ms
from beam_caption.estimate.pipeline import TallyFn
from beam_caption.estimate.tally import Tally
from beam_caption.inputs.fetch import FetchSettings
from beam_caption.inputs.images import ImageError, PrepareSettings, prepare_image, sent_size
from beam_caption.inputs.sources import ImageRef
from tests.fixtures.images import make_image_corpus

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
SIDES = (0, 100, 512, 768)
PRICES = load_prices()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str | None]]:
    folder = tmp_path_factory.mktemp("corpus")
    return folder, make_image_corpus(folder)


def _valid_images(corpus: tuple[Path, dict[str, str | None]]) -> list[Path]:
    folder, expected = corpus
    return [folder / n for n, code in expected.items() if code is None] + sorted(
        SAMPLES.glob("*.jpg"))


def _caption(*flags: str) -> CaptionConfig:
    """The CaptionConfig `estimate` builds from these flags (the run's own)."""
    args, _ = build_parser().parse_known_args(["estimate", "--input", "x", *flags])
    return run_config(args).caption


def _spec(*flags: str) -> ms.TokenSpec:
    return ms.token_spec(PRICES, _caption(*flags), max_sides=SIDES)


# --- sent size and header reads --------------------------------------------------------------

def test_sent_size_is_the_size_prepare_image_sends(corpus) -> None:
    for path in _valid_images(corpus):
        data = path.read_bytes()
        width, height, jpeg = ms.read_header_size(str(path), FetchSettings(), 89_478_485)
        for side in SIDES:
            prepared = prepare_image(str(path), data, PrepareSettings(max_side=side))
            assert (prepared.width, prepared.height) == (width, height), path.name
            assert sent_size(width, height, side, jpeg=jpeg) == (
                prepared.sent_width, prepared.sent_height), (path.name, side)


def test_sent_size_rounds_and_never_enlarges() -> None:
    assert sent_size(4032, 3024, 512) == (512, 384)
    assert sent_size(3024, 4032, 512) == (384, 512)
    assert sent_size(4032, 3024, 512, jpeg=True) == (504, 378)  # the 1/8 decode, as it comes
    assert sent_size(451, 300, 512) == (451, 300)
    assert sent_size(451, 300, 0) == (451, 300)
    assert sent_size(5000, 3, 512) == (512, 1)  # never below 1 px


def test_header_codes_on_the_corpus(corpus) -> None:
    folder, _ = corpus
    codes = {}
    for path in sorted(folder.iterdir()):
        try:
            ms.read_header_size(str(path), FetchSettings(), 89_478_485)
            codes[path.name] = None
        except ImageError as exc:
            codes[path.name] = exc.code
    assert {n: c for n, c in codes.items() if c} == {
        "empty.jpg": "empty_file", "random_bytes.jpg": "decode_error",
        "text.png": "decode_error", "bomb.png": "too_many_pixels"}
    # A whole header over broken data is only found by decoding: the run finds these two.
    assert codes["truncated.jpg"] is None and codes["corrupt.png"] is None


def _jpeg_with_big_header(size: tuple[int, int]) -> bytes:
    """A JPEG whose SOF marker sits after ~300 KB of APP15 segments (beyond the prefix)."""
    out = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(out, "JPEG")
    jpeg = out.getvalue()
    segment = b"\xff\xef" + struct.pack(">H", 60_002) + b"\0" * 60_000
    return jpeg[:2] + segment * 5 + jpeg[2:]


def test_header_beyond_the_prefix_reads_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "big_header.jpg"
    data = _jpeg_with_big_header((300, 200))
    assert len(data) > ms.HEADER_PREFIX_BYTES
    path.write_bytes(data)
    assert ms.read_header_size(str(path), FetchSettings(), 10**8) == (300, 200, True)


def test_header_read_codes_for_missing_large_and_big_files(tmp_path: Path) -> None:
    with pytest.raises(ImageError) as missing:
        ms.read_header_size(str(tmp_path / "nope.jpg"), FetchSettings(), 10**8)
    assert missing.value.code == "not_found"
    path = tmp_path / "big_header.jpg"
    path.write_bytes(_jpeg_with_big_header((300, 200)))
    with pytest.raises(ImageError) as large:
        ms.read_header_size(str(path), FetchSettings(max_bytes=ms.HEADER_PREFIX_BYTES), 10**8)
    assert large.value.code == "too_large"
    with pytest.raises(ImageError) as pixels:
        ms.read_header_size(str(path), FetchSettings(), 300 * 200 - 1)
    assert pixels.value.code == "too_many_pixels"


# --- tokens ----------------------------------------------------------------------------------

@pytest.mark.parametrize("flags", [[], ["--system-prompt", "Be brief.", "--detail", "low"],
                                   ["--schema", "tags", "--schema-mode", "prompt"]])
def test_measure_equals_the_engines_estimate_for_every_model(corpus, flags) -> None:
    spec = _spec(*flags)
    keys = spec.keys()
    for path in _valid_images(corpus)[:6]:
        for row_prompt in (None, "What is in this picture?"):
            measured = ms.measure(ImageRef(str(path), prompt=row_prompt), spec)
            assert measured.code is None
            by_key = dict(zip(keys, measured.prompt_tokens, strict=True))
            for side in SIDES:
                image = prepare_image(str(path), path.read_bytes(),
                                      PrepareSettings(max_side=side), prompt=row_prompt)
                for name, price in [*PRICES.items(), ("unknown-model", None)]:
                    config = dataclasses.replace(spec.caption, price=price)
                    key = ms.rule_key(price.image_tokens if price else None)
                    assert by_key[(key, side)] == config.estimated_prompt_tokens(
                        (image.sent_width, image.sent_height), image.prompt), (name, side)


def test_a_manifest_prompt_replaces_the_default_prompt() -> None:
    path = str(SAMPLES / "coffee.jpg")
    spec = _spec()
    short = ms.measure(ImageRef(path), spec)
    longer = ms.measure(ImageRef(path, prompt="x" * 400), spec)
    assert longer.text_tokens - short.text_tokens == 100 - 9  # 400 bytes vs 36 bytes, /4
    assert all(b - a == 91 for a, b in zip(short.prompt_tokens, longer.prompt_tokens,
                                           strict=True))


def test_tally_is_order_independent_and_round_trips() -> None:
    spec = _spec()
    keys = spec.keys()
    items = [ms.measure(ImageRef(str(p)), spec) for p in sorted(SAMPLES.glob("*.jpg"))]
    items += [ms.Measured(f"/x/bad{i:02d}.jpg", code="decode_error") for i in range(12)]
    one = Tally()
    for item in items:
        one.add(item, keys)
    left, right = Tally(), Tally()
    for i, item in enumerate(reversed(items)):
        (left if i % 2 else right).add(item, keys)
    merged = TallyFn(keys).merge_accumulators([left, right])
    assert merged.to_dict() == one.to_dict()
    assert Tally.from_dict(json.loads(json.dumps(one.to_dict()))) == one
    assert one.images == 8 and one.files == 20
    assert [u for u, _ in one.examples] == [f"/x/bad{i:02d}.jpg" for i in range(10)]


# --- the bill --------------------------------------------------------------------------------

def _tally(images: int, prompt_per_image: int, rule: dict | None, side: int = 512,
           unreadable: int = 0) -> Tally:
    return Tally(images=images, text_tokens=15 * images,
                 prompt_tokens={(ms.rule_key(rule), side): prompt_per_image * images},
                 unreadable={"decode_error": unreadable} if unreadable else {})


def test_the_issue_arithmetic_full_size_photo_on_gpt_5_4_nano() -> None:
    # "2,751 input + 112 output tokens, $0.00069" (issue 5).
    nano = PRICES["gpt-5.4-nano"]
    line = bill.cost_line(_tally(1000, 2751, nano.image_tokens), 1.0, "gpt-5.4-nano", nano, 512,
                         112, 112)
    assert line["realtime_usd_per_1000"] == pytest.approx(0.69, abs=0.0005)
    assert line["batch_usd_per_1000"] == pytest.approx(0.69 / 2, abs=0.0005)


@pytest.mark.parametrize("model", sorted(PRICES))
def test_cost_line_per_model_from_the_price_table(model: str) -> None:
    price = PRICES[model]
    line = bill.cost_line(_tally(2000, 500, price.image_tokens), 1.0, model, price, 512, 30, 60)
    prompt, out, worst = 2000 * 500, 2000 * 30, 2000 * 60
    realtime = (prompt * price.input + out * price.output) / 1e6
    assert line["input_tokens"] == prompt and line["output_tokens"] == out
    assert line["text_tokens"] + line["image_tokens"] == prompt
    assert line["input_usd"] == pytest.approx(prompt * price.input / 1e6)
    assert line["realtime_usd"] == pytest.approx(realtime)
    assert line["batch_usd"] == pytest.approx(realtime * price.batch_discount)
    assert line["realtime_usd_worst"] == pytest.approx((prompt * price.input
                                                        + worst * price.output) / 1e6)
    assert line["realtime_usd_per_1000"] == pytest.approx(realtime / 2)


def test_unknown_model_has_tokens_but_no_cost_and_a_warning() -> None:
    tally = _tally(10, 300, None)
    report = bill.bill_document(tally.to_dict(), PRICES, bill.BillSettings("my-local-vlm", 512))
    chosen = report["chosen"]
    assert chosen["input_tokens"] == 3000 and chosen["output_tokens"] == 300
    assert chosen["realtime_usd"] is None and chosen["batch_usd_worst"] is None
    assert not report["priced"]
    assert any("no price for model my-local-vlm" in w for w in report["warnings"])
    # Compared with the cheapest priced models (whose rules this tally lacks: zero tokens).
    assert len(report["by_model"]) == 1 + bill.DEFAULT_COMPARE_COUNT


def test_prices_file_overrides_and_adds_models(tmp_path: Path) -> None:
    table = {"models": {
        "gpt-5.4-nano": {"input": 1.0, "cached_input": 0.1, "output": 2.0, "batch_discount": 0.5,
                         "image_tokens": {"rule": "patch", "multiplier": 2.46}},
        "local-llava": {"input": 0, "cached_input": 0, "output": 0}}}
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(table))
    prices = load_prices(str(path))
    nano = prices["gpt-5.4-nano"]
    tally = _tally(100, 400, nano.image_tokens)
    report = bill.bill_document(tally.to_dict(), prices, bill.BillSettings(
        "gpt-5.4-nano", 512, expected_output_tokens=20,
        compare_models=("local-llava", "gpt-4.1-nano")))
    assert report["chosen"]["realtime_usd"] == pytest.approx((40_000 * 1.0 + 2000 * 2.0) / 1e6)
    local = next(ln for ln in report["by_model"] if ln["model"] == "local-llava")
    assert local["realtime_usd"] == 0 and local["batch_usd"] == 0
    assert [ln["model"] for ln in report["by_model"]] == ["local-llava", "gpt-4.1-nano",
                                                          "gpt-5.4-nano"]


def test_default_comparison_is_the_nearest_cheaper_and_dearer() -> None:
    costs = {"a": 1.0, "b": 2.0, "c": 3.0, "chosen": 3.5, "d": 4.0, "e": 5.0, "f": 6.0,
             "g": None}
    assert bill.default_compare_models(costs, "chosen") == ["b", "c", "d", "e"]
    assert bill.default_compare_models({**costs, "chosen": 0.5}, "chosen") == ["a", "b", "c", "d"]
    assert bill.default_compare_models({**costs, "chosen": 9.0}, "chosen") == ["c", "d", "e", "f"]
    assert bill.default_compare_models({**costs, "chosen": None}, "chosen") == ["a", "b", "c", "d"]
    assert bill.default_compare_models({"chosen": 1.0, "a": 2.0}, "chosen") == ["a"]


def test_report_scales_a_sample_and_compares_max_sides() -> None:
    nano = PRICES["gpt-5.4-nano"]
    tally = _tally(8, 500, nano.image_tokens, unreadable=2).to_dict()
    tally.update(files_total=1000, sample=10)
    report = bill.bill_document(tally, PRICES, bill.BillSettings("gpt-5.4-nano", 512,
                                                              expected_output_tokens=100))
    assert report["sample"]["scale"] == 100
    assert (report["files"], report["images"], report["unreadable"]) == (1000, 800, 200)
    assert report["chosen"]["input_tokens"] == 800 * 500
    assert report["expected_output_tokens"] == 60  # capped at --max-output-tokens
    assert any("--expected-output-tokens 100" in w for w in report["warnings"])
    assert [ln["max_side"] for ln in report["by_max_side"]] == [512, 768, 0]


# --- flags -----------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, fragment", [
    (["--sample", "0"], "--sample"),
    (["--expected-output-tokens", "-1"], "--expected-output-tokens"),
    (["--compare-models", "gpt-4o,no-such-model"], "no-such-model"),
    (["--no-such-flag"], "--no-such-flag"),
    (["--runner", "DataflowRunner"], "--output"),
    (["--prices", "/nonexistent/prices.json"], "--prices"),
])
def test_bad_flags_exit_2_with_one_line(argv, fragment, capsys) -> None:
    try:
        code = cli_main(["estimate", "--input", str(SAMPLES / "*.jpg"), *argv])
    except SystemExit as exc:
        code = int(exc.code or 0)
    _, err = capsys.readouterr()
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and fragment in err, err


def test_no_input_and_unmatched_input_exit_2(tmp_path: Path, capsys) -> None:
    assert cli_main(["estimate"]) == 2
    assert cli_main(["estimate", "--input", str(tmp_path / "*.jpg")]) == 2
    err = capsys.readouterr().err
    assert "--input" in err and "matched no files" in err
