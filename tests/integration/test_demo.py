"""`make demo`, the README's run-it command, really runs: sample photos -> simulator -> Parquet."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.integration.pipeline_helpers import read_rows, read_summary

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_make_demo_captions_every_sample_photo(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    env = {**os.environ, "NO_GCE_CHECK": "true"}
    result = subprocess.run(["make", "--no-print-directory", "demo", f"DEMO_OUT={out}"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                            check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    samples = sorted(p.name for p in (ROOT / "samples").glob("*.jpg"))
    rows = read_rows(out, "captions")
    assert sorted(Path(r["uri"]).name for r in rows) == samples
    assert read_summary(out)["captions"] == len(samples)
    # The preview table names every photo with its caption.
    for row in rows:
        assert Path(row["uri"]).name[:27] in result.stdout
        assert row["caption"][:40] in result.stdout
