"""`beam-caption estimate` end to end: the real pipeline on the FnApiRunner, then the same inputs
through `beam-caption run` against the simulator, whose ledger is the bill to predict."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest

from beam_caption.cost import estimate as est
from beam_caption.cost.pricing import load_prices
from beam_caption.inputs.sources import ImageRef
from beam_caption.simulator import running_simulator
from tests.fixtures.images import make_image_corpus
from tests.fixtures.photos import make_small_photos
from tests.integration.pipeline_helpers import IN_MEMORY, read_summary, run_cli

pytestmark = pytest.mark.slow

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
PRICES = load_prices()


def report_model(flags: list[str]) -> str:
    """The --model among `flags` (the default otherwise)."""
    return flags[flags.index("--model") + 1] if "--model" in flags else "gpt-5.4-nano"


def estimate(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    """`beam-caption estimate --json ARGS` in this process; the printed report."""
    capsys.readouterr()
    assert run_cli("estimate", "--json", *args) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample photos plus the corpus's valid images (PNG, GIF, TIFF, CMYK, EXIF, 12 MP)."""
    folder = tmp_path_factory.mktemp("photos")
    corpus = tmp_path_factory.mktemp("corpus")
    for name, code in make_image_corpus(corpus).items():
        if code is None:
            shutil.copy(corpus / name, folder / name)
    for path in SAMPLES.glob("*.jpg"):
        shutil.copy(path, folder / path.name)
    return folder


@pytest.mark.parametrize("flags", [
    [],  # gpt-5.4-nano (patch rule), 512 px
    ["--model", "gpt-4.1", "--max-side", "0", "--detail", "high"],  # tile rule, full size
    ["--model", "gpt-4.1-mini", "--max-side", "768", "--system-prompt", "Be concise.",
     "--schema", "tags"],
], ids=["defaults", "tile-full-size", "mini-768-schema"])
def test_estimate_matches_the_simulated_bill(photos, tmp_path, capsys, flags) -> None:
    inputs = ["--input", str(photos / "*")]
    price = PRICES[report_model(flags)]
    report = estimate(capsys, *inputs, *flags)
    with running_simulator() as sim:
        code = run_cli("run", *inputs, *flags, "--output", str(tmp_path / "out"),
                       "--base-url", sim.base_url, *IN_MEMORY)
        ledger = sim.stats()
    assert code == 0
    summary = read_summary(tmp_path / "out")
    images = len(list(photos.iterdir()))
    assert report["images"] == summary["captions"] == images and report["unreadable"] == 0
    chosen = report["chosen"]
    billed = ledger["tokens"]["realtime"]
    assert chosen["input_tokens"] == pytest.approx(billed["prompt"], rel=0.02)
    assert chosen["input_usd"] == pytest.approx(price.cost_usd(billed["prompt"], 0), rel=0.02)
    total = ledger["cost_usd"]["realtime"]
    # The answers' length is the only guess: the bill lies between "input only" and the worst
    # case (every answer at --max-output-tokens).
    assert chosen["input_usd"] * 0.98 < total <= chosen["realtime_usd_worst"] * 1.02
    assert billed["completion"] <= chosen["output_tokens_worst"]
    print(f"\n[{' '.join(flags) or 'defaults'}] {images} images: estimated input "
          f"{chosen['input_tokens']} vs billed {billed['prompt']}; total at the default expected "
          f"output ${chosen['realtime_usd']:.6f} vs billed ${total:.6f} "
          f"({chosen['realtime_usd'] / total - 1:+.1%}); mean completion "
          f"{billed['completion'] / images:.1f} tokens")


@pytest.fixture
def no_connections(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record (and refuse) every outgoing connection made in this process."""
    attempts: list[Any] = []

    def refuse(self: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise ConnectionRefusedError(f"test forbids connecting to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


def test_estimate_touches_no_network(no_connections, capsys) -> None:
    # The guard works: a connection attempt is recorded and refused.
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", 9), timeout=1)
    assert len(no_connections) == 1
    no_connections.clear()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    report = estimate(capsys, "--input", str(SAMPLES / "*.jpg"),
                      "--base-url", f"http://127.0.0.1:{port}/v1", "--model", "gpt-4.1-mini")
    assert report["images"] == 8 and report["chosen"]["realtime_usd"] > 0
    assert no_connections == []


def test_corpus_counts_and_lists_unreadable_files(tmp_path, capsys) -> None:
    expected = make_image_corpus(tmp_path / "corpus")
    capsys.readouterr()
    assert run_cli("estimate", "--input", str(tmp_path / "corpus" / "*")) == 0
    text = capsys.readouterr().out
    assert "files 15: 11 images, 4 unreadable" in text
    assert "unreadable (decode_error 2, empty_file 1, too_many_pixels 1):" in text
    for name in ("empty.jpg", "random_bytes.jpg", "text.png", "bomb.png"):
        assert f"{expected[name]}: {tmp_path / 'corpus' / name}" in text
    assert "> gpt-5.4-nano" in text and "> 512 px" in text


def test_sample_is_deterministic_and_scales_up(tmp_path, capsys) -> None:
    folder = tmp_path / "many"
    make_small_photos(folder, 30)
    make_small_photos(folder / "large", 10, size=(900, 600))
    pattern = str(folder / "**.jpg")
    full = estimate(capsys, "--input", pattern)
    first = estimate(capsys, "--input", pattern, "--sample", "10", "--output", str(tmp_path / "o"))
    again = estimate(capsys, "--input", pattern, "--sample", "10")
    assert first == again
    assert json.loads((tmp_path / "o" / "estimate.json").read_text()) == first
    assert first["sample"] == {"requested": 10, "measured": 10, "files_total": 40, "scale": 4.0}
    assert first["files"] == full["files"] == 40 and first["images"] == 40
    # The sample is the 10 files with the smallest sample_key; measured alone, x4, they give it.
    paths = sorted(folder.rglob("*.jpg"), key=lambda p: est.sample_key(ImageRef(str(p))))
    manifest = tmp_path / "sampled.txt"
    manifest.write_text("".join(f"{p}\n" for p in paths[:10]))
    alone = estimate(capsys, "--manifest", str(manifest))
    for key in ("input_tokens", "output_tokens", "output_tokens_worst"):
        assert first["chosen"][key] == 4 * alone["chosen"][key]
    assert first["chosen"]["realtime_usd"] == pytest.approx(4 * alone["chosen"]["realtime_usd"])
    assert full["chosen"]["input_tokens"] != first["chosen"]["input_tokens"]  # mixed sizes
    capsys.readouterr()
    assert run_cli("estimate", "--input", pattern, "--sample", "5") == 0
    assert "5 of 40 files measured (deterministic sample)" in capsys.readouterr().out


def test_estimate_calibrated_by_a_trial_run_is_within_two_percent(photos, tmp_path,
                                                                   capsys) -> None:
    """The documented workflow: a trial run on a few photos, then the estimate for all."""
    with running_simulator() as sim:
        assert run_cli("run", "--input", str(SAMPLES / "*.jpg"), "--output",
                       str(tmp_path / "trial"), "--base-url", sim.base_url, *IN_MEMORY) == 0
        report = estimate(capsys, "--input", str(photos / "*"), "--output-tokens-from",
                          str(tmp_path / "trial"))
        sim.reset()
        assert run_cli("run", "--input", str(photos / "*"), "--output", str(tmp_path / "all"),
                       "--base-url", sim.base_url, *IN_MEMORY) == 0
        total = sim.stats()["cost_usd"]["realtime"]
    estimated = report["chosen"]["realtime_usd"]
    print(f"\ncalibrated estimate ${estimated:.6f} vs billed ${total:.6f} "
          f"({estimated / total - 1:+.2%})")
    assert estimated == pytest.approx(total, rel=0.02)
