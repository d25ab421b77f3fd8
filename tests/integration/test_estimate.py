"""`beam-caption estimate` end to end: the real pipeline on the FnApiRunner, then the same inputs
through `beam-caption run` against the simulator, whose ledger is the bill to predict."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from beam_caption.cost.pricing import format_usd
from beam_caption.estimate.pipeline import sample_key
from beam_caption.inputs.sources import ImageRef
from beam_caption.simulator import running_simulator
from tests.fixtures.images import make_image_corpus
from tests.fixtures.photos import make_small_photos
from tests.integration.pipeline_helpers import IN_MEMORY, read_summary, run_cli

pytestmark = pytest.mark.slow

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def estimate(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    """`beam-caption estimate --json ARGS` in this process; the printed bill."""
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


# Three photos at the sizes of the OpenAI vision guide's worked examples.
DOCUMENTED_SIZES = {"square.jpg": (1024, 1024), "portrait.jpg": (1800, 2400),
                    "tall.jpg": (2048, 4096)}
# Every case sends the three photos, so 3 x 30 = 90 output tokens are expected (the default
# answer length) and 3 x 60 = 180 are the worst case (--max-output-tokens 60).
# Text: "Describe this photo in one sentence." is 36 bytes = 9 tokens, + 3 for its message + 3
# to prime the reply = 15 tokens per request.
PINNED = [
    # gpt-5.4-nano, patch rule x 2.46, --max-side 512 (the defaults):
    #   1024x1024 -> 512x512 = 16 x 16 = 256 patches x 2.46 = 629.76 -> 630 + 15 = 645
    #   1800x2400 -> 384x512 = 12 x 16 = 192 patches x 2.46 = 472.32 -> 473 + 15 = 488
    #   2048x4096 -> 256x512 =  8 x 16 = 128 patches x 2.46 = 314.88 -> 315 + 15 = 330
    #   645 + 488 + 330 = 1,463 input tokens
    # $0.20 in / $1.25 out per million:
    #   input    1,463 x 0.20 / 1e6                 = $0.0002926
    #   expected 0.0002926 + 90 x 1.25 / 1e6        = $0.0004051
    #   worst    0.0002926 + 180 x 1.25 / 1e6       = $0.0005176
    pytest.param([], 1463, 0.0002926, 0.0004051, 0.0005176, 1.25, id="nano-512-patch"),
    # gpt-4.1-nano, patch rule x 2.46, --max-side 0 (sent as they are: the guide's examples):
    #   1024x1024 = 32 x 32 = 1,024 patches (documented) x 2.46 = 2,519.04 -> 2,520 + 15 = 2,535
    #   1800x2400 -> 1,452 patches (documented) x 2.46 = 3,571.92 -> 3,572 + 15 = 3,587
    #   2048x4096 = 64 x 128 = 8,192 patches > 1,536: scaled by sqrt(32 x 32 x 1,536 / (2048 x
    #     4096)) = 0.4330 to 27.7 x 55.4 patches, then by 27 / 27.7 so whole patches fit the
    #     narrow side: 864x1728 = 27 x 54 = 1,458 patches x 2.46 = 3,586.68 -> 3,587 + 15 = 3,602
    #   2,535 + 3,587 + 3,602 = 9,724 input tokens
    # $0.10 in / $0.40 out per million:
    #   input    9,724 x 0.10 / 1e6                 = $0.0009724
    #   expected 0.0009724 + 90 x 0.40 / 1e6        = $0.0010084
    #   worst    0.0009724 + 180 x 0.40 / 1e6       = $0.0010444
    pytest.param(["--model", "gpt-4.1-nano", "--max-side", "0"],
                 9724, 0.0009724, 0.0010084, 0.0010444, 0.40, id="4.1-nano-original-patch"),
    # gpt-4.1, tile rule 85 + 170 per 512 px tile, --max-side 0, --detail high:
    #   1024x1024: fits 2048; shortest side to 768 -> 768x768 = 2 x 2 tiles: 85 + 680 = 765
    #     (documented) + 15 = 780
    #   1800x2400: fit in 2048 -> 1536x2048; shortest side to 768 -> 768x1024 = 2 x 2 tiles:
    #     765 + 15 = 780
    #   2048x4096: fit in 2048 -> 1024x2048; shortest side to 768 -> 768x1536 = 2 x 3 tiles:
    #     85 + 1,020 = 1,105 (documented) + 15 = 1,120
    #   780 + 780 + 1,120 = 2,680 input tokens
    # $2.00 in / $8.00 out per million (OpenAI's price of gpt-4.1):
    #   input    2,680 x 2.00 / 1e6                 = $0.00536
    #   expected 0.00536 + 90 x 8.00 / 1e6          = $0.00608
    #   worst    0.00536 + 180 x 8.00 / 1e6         = $0.00680
    pytest.param(["--model", "gpt-4.1", "--max-side", "0", "--detail", "high"],
                 2680, 0.00536, 0.00608, 0.00680, 8.00, id="4.1-original-tile-high"),
    # gpt-5.4-mini, patch rule x 1.62, --max-side 768, a system prompt "Be concise." (11 bytes =
    # 3 tokens): text 3 + 9 + 2 messages x 3 + 3 = 21 tokens per request.
    #   1024x1024 -> 768x768 = 24 x 24 = 576 patches x 1.62 = 933.12 -> 934 + 21 = 955
    #   1800x2400 -> 576x768 = 18 x 24 = 432 patches x 1.62 = 699.84 -> 700 + 21 = 721
    #   2048x4096 -> 384x768 = 12 x 24 = 288 patches x 1.62 = 466.56 -> 467 + 21 = 488
    #   955 + 721 + 488 = 2,164 input tokens
    # $0.75 in / $4.50 out per million:
    #   input    2,164 x 0.75 / 1e6                 = $0.001623
    #   expected 0.001623 + 90 x 4.50 / 1e6         = $0.002028
    #   worst    0.001623 + 180 x 4.50 / 1e6        = $0.002433
    pytest.param(["--model", "gpt-5.4-mini", "--max-side", "768", "--system-prompt",
                  "Be concise."], 2164, 0.001623, 0.002028, 0.002433, 4.50,
                 id="5.4-mini-768-system-prompt"),
]


@pytest.fixture(scope="module")
def documented(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One JPEG at each of DOCUMENTED_SIZES."""
    folder = tmp_path_factory.mktemp("documented")
    for i, (name, size) in enumerate(DOCUMENTED_SIZES.items()):
        Image.new("RGB", size, (40 + 60 * i, 120, 200 - 50 * i)).save(folder / name, quality=85)
    return folder


@pytest.mark.parametrize(("flags", "input_tokens", "input_usd", "expected_usd", "worst_usd",
                          "output_usd_per_million"), PINNED)
def test_estimate_and_simulated_bill_match_the_published_rules(
        documented, tmp_path, capsys, flags, input_tokens, input_usd, expected_usd, worst_usd,
        output_usd_per_million) -> None:
    inputs = ["--input", str(documented / "*.jpg")]
    report = estimate(capsys, *inputs, *flags)
    with running_simulator() as sim:
        code = run_cli("run", *inputs, *flags, "--output", str(tmp_path / "out"),
                       "--base-url", sim.base_url, *IN_MEMORY)
        ledger = sim.stats()
    assert code == 0
    assert read_summary(tmp_path / "out")["captions"] == report["images"] == 3
    chosen = report["chosen"]
    billed = ledger["tokens"]["realtime"]
    # Token counts are not a guess: the estimate and the simulated bill both equal the rules.
    assert chosen["input_tokens"] == input_tokens
    assert billed["prompt"] == input_tokens
    assert (chosen["output_tokens"], chosen["output_tokens_worst"]) == (90, 180)
    assert chosen["input_usd"] == pytest.approx(input_usd, rel=1e-9)
    assert chosen["realtime_usd"] == pytest.approx(expected_usd, rel=1e-9)
    assert chosen["realtime_usd_worst"] == pytest.approx(worst_usd, rel=1e-9)
    # The answers' length is the one guess: the simulated bill is the pinned input cost plus the
    # answers it generated at the output price, between "input only" and the worst case (every
    # answer at --max-output-tokens), within the 2% the estimate promises.
    total = ledger["cost_usd"]["realtime"]
    assert 0 < billed["completion"] <= 180
    assert total == pytest.approx(input_usd + billed["completion"] * output_usd_per_million / 1e6,
                                  rel=1e-9)
    assert input_usd * 0.98 < total <= worst_usd * 1.02
    print(f"\n[{' '.join(flags) or 'defaults'}] input {input_tokens:,} tokens; total at the "
          f"default expected output {format_usd(expected_usd)} vs billed {format_usd(total)} "
          f"({expected_usd / total - 1:+.1%}); mean completion {billed['completion'] / 3:.1f} "
          "tokens")


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
    paths = sorted(folder.rglob("*.jpg"), key=lambda p: sample_key(ImageRef(str(p))))
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
    print(f"\ncalibrated estimate {format_usd(estimated)} vs billed {format_usd(total)} "
          f"({estimated / total - 1:+.2%})")
    assert estimated == pytest.approx(total, rel=0.02)
