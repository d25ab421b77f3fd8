"""The HTML report of a real run over the bundled sample photos, rendered by headless Chromium:
every caption and the totals are on the page, and the search box filters the gallery.

The page is opened as a file:// URL with every network feature of Chromium off and every host
name unresolvable. The search is driven through the page's ?q= parameter, which types the words
into the box and fires the same input event a keystroke does; the DOM is then dumped and read.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.integration.pipeline_helpers import IN_MEMORY, read_rows, run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed: `make "
                       "browser` installs Debian's chromium package (needs root and apt)"),
]
SAMPLES = Path(__file__).resolve().parents[2] / "samples"


class Dom(HTMLParser):
    """The gallery cards (caption text, hidden or not), the totals and the shown-count line."""

    def __init__(self) -> None:
        super().__init__()
        self.cards: list[dict[str, Any]] = []
        self.stats: dict[str, str] = {}
        self.shown = ""
        self.images = 0
        self._target: tuple[str, str] | None = None
        self._stat: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "figure" and "card" in classes:
            self.cards.append({"hidden": "hidden" in a, "caption": ""})
        elif tag == "p" and "caption" in classes:
            self._target = ("card", "caption")
        elif tag == "div" and "stat" in classes:
            self._stat = a["data-key"]
        elif tag == "div" and "v" in classes and self._stat:
            self._target = ("stat", self._stat)
            self.stats[self._stat] = ""
        elif tag == "span" and a.get("id") == "shown":
            self._target = ("shown", "")
        elif tag == "img" and (a.get("src") or "").startswith("data:image/jpeg;base64,"):
            self.images += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("p", "div", "span"):
            self._target = None

    def handle_data(self, data: str) -> None:
        if self._target is None:
            return
        kind, key = self._target
        if kind == "card":
            self.cards[-1]["caption"] += data
        elif kind == "stat":
            self.stats[key] += data
        else:
            self.shown += data

    def visible(self) -> set[str]:
        return {card["caption"] for card in self.cards if not card["hidden"]}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The demo: the sample photos through the pipeline and the simulator, then the report."""
    out = tmp_path_factory.mktemp("demo")
    assert run_cli("run", "--simulate", "--input", str(SAMPLES / "*.jpg"), "--output", str(out),
                   "--overwrite", *IN_MEMORY) == 0
    page = out / "report.html"
    assert run_cli("report", str(out), "--html", str(page)) == 0
    return out, page


def render(page: Path, profile: Path, query: str | None = None) -> Dom:
    """The DOM of `page` after its script ran, as headless Chromium dumps it."""
    url = page.as_uri() + (f"?q={urllib.parse.quote(query)}" if query is not None else "")
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--host-resolver-rules=MAP * ~NOTFOUND",
         f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = Dom()
    dom.feed(proc.stdout)
    return dom


def test_every_caption_and_the_totals_are_shown(demo, tmp_path: Path) -> None:
    out, page = demo
    captions = [row["caption"] for row in read_rows(out, "captions")]
    assert len(captions) == len(list(SAMPLES.glob("*.jpg")))
    dom = render(page, tmp_path)
    assert sorted(card["caption"] for card in dom.cards) == sorted(captions)
    assert dom.visible() == set(captions)
    assert dom.images == len(captions)
    assert dom.shown == f"{len(captions)} of {len(captions)} shown"
    images, prompt, completion, cost = duckdb.execute(
        "select count(*), sum(prompt_tokens), sum(completion_tokens), sum(cost_usd) "
        f"from '{out}/captions-*.parquet'").fetchone()
    assert dom.stats["images"] == f"{images:,}"
    assert dom.stats["captions"] == f"{images:,}"
    assert dom.stats["errors"] == "0"
    assert dom.stats["prompt-tokens"] == f"{prompt:,}"
    assert dom.stats["completion-tokens"] == f"{completion:,}"
    # Four significant digits of the summed cost (the run is well under a dollar).
    shown = dom.stats["cost"]
    assert re.fullmatch(r"\$0\.0*[1-9]\d{3}", shown), shown
    assert float(shown[1:]) == pytest.approx(cost, rel=5e-4)


def test_the_search_box_filters_by_caption_text(demo, tmp_path: Path) -> None:
    out, page = demo
    captions = [row["caption"] for row in read_rows(out, "captions")]
    word = _discriminating_word(captions)
    expected = {c for c in captions if word in c.lower()}
    dom = render(page, tmp_path, word)
    assert dom.visible() == expected
    assert dom.shown == f"{len(expected)} of {len(captions)} shown"
    assert len(dom.cards) == len(captions)  # filtered, not removed

    # Every word must match, in any case; a caption matching one word only is hidden.
    second = _discriminating_word(sorted(expected), exclude=word)
    both = {c for c in expected if second in c.lower()}
    dom = render(page, tmp_path, f"{second.upper()}  {word}")
    assert dom.visible() == both and len(both) < len(expected)

    dom = render(page, tmp_path, "no caption says zyzzyva")
    assert dom.visible() == set() and dom.shown == f"0 of {len(captions)} shown"


def _discriminating_word(captions: list[str], exclude: str = "") -> str:
    """A word found in some but not all captions, as close to half of them as possible."""
    words = sorted({w for c in captions for w in re.findall(r"[a-z]{3,}", c.lower())} - {exclude})
    scored = [(abs(sum(w in c.lower() for c in captions) * 2 - len(captions)), w) for w in words
              if 0 < sum(w in c.lower() for c in captions) < len(captions)]
    assert scored, f"the captions are too alike to test a search: {captions}"
    return min(scored)[1]
