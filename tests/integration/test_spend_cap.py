"""The spend cap at every size where it binds: from below one request's worst case to more than
the whole bill, 1 and 2 worker processes, concurrency 1, 8 and 64, 8, 60 and 300 images.

Every run ends (the pytest timeout catches a hang), the simulator's bill never passes the cap
(worst-case reservations: the in-flight window is already inside it), every image has exactly one
row, and `--resume` without the cap captions the rest without paying for anything twice.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from beam_caption.cost.pricing import load_prices
from beam_caption.engine.budget import SpendCap
from beam_caption.simulator import running_simulator
from tests.fixtures.photos import make_small_photos
from tests.integration.pipeline_helpers import read_rows, read_summary, run_cli

pytestmark = pytest.mark.slow

PRICE = load_prices()["gpt-5.4-nano"]
# The 320x240 test photos cost about 200 prompt tokens each (10 x 8 = 80 patches x 2.46 = 196
# image tokens, plus the prompt) and at most 60 answer tokens (the default cap).
WORST_CASE = SpendCap.worst_case_usd(PRICE, 200, 60)
CAPS = {"below-one-request": lambda bill: WORST_CASE / 2,
        "a-third": lambda bill: bill / 3,
        "the-whole-bill": lambda bill: bill,
        "twice-the-bill": lambda bill: 2 * bill}


@pytest.fixture(scope="module")
def sim():
    with running_simulator() as handle:
        yield handle


@pytest.fixture(scope="module")
def libraries(tmp_path_factory, sim) -> dict[int, tuple[Path, float]]:
    """Photo folders of 8, 60 and 300 images, each with the bill of captioning all of it."""
    found = {}
    for count in (8, 60, 300):
        folder = tmp_path_factory.mktemp(f"photos{count}")
        make_small_photos(folder, count, size=(320, 240), seed=count)
        sim.reset()
        out = tmp_path_factory.mktemp(f"reference{count}")
        assert _run(sim, folder, out, 1, 64) == 0
        found[count] = (folder, sim.stats()["cost_usd"]["realtime"])
    return found


def _run(sim, photos: Path, out: Path, workers: int, concurrency: int, *extra: str) -> int:
    mode = (["--direct_running_mode=in_memory", "--direct_num_workers=1"] if workers == 1
            else ["--direct_running_mode=multi_processing", f"--direct_num_workers={workers}"])
    return run_cli("run", "--input", str(photos / "*.jpg"), "--output", str(out),
                   "--base-url", sim.base_url, "--concurrency", str(concurrency), *mode, *extra)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("cap_name", CAPS)
@pytest.mark.parametrize("concurrency", [1, 8, 64])
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("images", [8, 60, 300])
def test_the_cap_ends_the_run_holds_and_resume_finishes(sim, libraries, tmp_path, images,
                                                        workers, concurrency, cap_name) -> None:
    photos, bill = libraries[images]
    cap = CAPS[cap_name](bill)
    out = tmp_path / "out"
    sim.reset()
    code = _run(sim, photos, out, workers, concurrency, "--max-cost-usd", f"{cap:.10f}",
                "--overwrite")
    spent = sim.stats()["cost_usd"]["realtime"]
    assert spent <= cap + 1e-12, f"billed ${spent:.8f} against a cap of ${cap:.8f}"

    captions, errors = read_rows(out, "captions"), read_rows(out, "errors")
    assert len(captions) + len(errors) == images, "every image has exactly one row"
    assert {e["code"] for e in errors} <= {"budget_exceeded"}
    assert code == (1 if errors else 0)
    assert read_summary(out)["cost_usd"] == pytest.approx(spent, abs=1e-12)
    if cap_name == "below-one-request":
        assert captions == [] and sim.stats()["requests"]["total"] == 0
    if cap_name == "twice-the-bill":
        assert errors == [], "a cap above the bill never binds"

    assert _run(sim, photos, out, workers, concurrency, "--resume") == 0
    paid = Counter(sim.stats()["successes_by_image"])
    assert len(paid) == images and set(paid.values()) == {1}, "nothing was paid twice"
    rows = read_rows(out, "captions")
    assert len(rows) == images == len({r["uri"] for r in rows})
    assert read_rows(out, "errors") == []
