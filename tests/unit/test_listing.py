"""Glob semantics and the listing's split: every folder listed once, `**` zero or more folders."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from beam_caption.inputs import listers
from beam_caption.inputs.listers import Entry
from beam_caption.inputs.listing import MIN_PARTS, Glob, Part, first_match, list_part, split


@pytest.mark.parametrize(("pattern", "path", "matches"), [
    ("/p/**/*.jpg", "/p/a.jpg", True),  # ** with a slash: zero folders too
    ("/p/**/*.jpg", "/p/x/y/a.jpg", True),
    ("/p/**/*.jpg", "/p/x/a.png", False),
    ("/p/**.jpg", "/p/x/a.jpg", True),  # ** alone crosses folders as well
    ("/p/*.jpg", "/p/x/a.jpg", False),  # * never does
    ("/p/*/*.jpg", "/p/x/a.jpg", True),
    ("/p/*/*.jpg", "/p/a.jpg", False),
    ("/p/img?.jpg", "/p/img1.jpg", True),
    ("/p/img?.jpg", "/p/img10.jpg", False),
    ("/p/[ab]*.jpg", "/p/b1.jpg", True),
    ("/p/[!ab]*.jpg", "/p/b1.jpg", False),
    ("gs://b/2019-*/**", "gs://b/2019-07/x/y.heic", True),
    ("gs://b/2019-*/**", "gs://b/2020-07/x.jpg", False),
    ("gs://b/a+b/(1).jpg", "gs://b/a+b/(1).jpg", True),  # regex characters are literal
])
def test_glob_matches_like_a_shell_with_globstar(pattern: str, path: str, matches: bool) -> None:
    assert Glob(pattern).matches(path) is matches


@pytest.mark.parametrize(("pattern", "root"), [
    ("/p/q/**/*.jpg", "/p/q/"), ("gs://b/x*/y.jpg", "gs://b/"), ("/p/a.jpg", "/p/a.jpg"),
    ("gs://bucket/**", "gs://bucket/"),
])
def test_the_root_is_the_folder_before_the_first_wildcard(pattern: str, root: str) -> None:
    assert Glob(pattern).root == root


@pytest.mark.parametrize(("pattern", "folder", "may"), [
    ("/p/**/*.jpg", "/p/x/y/", True),
    ("/p/2019*/*.jpg", "/p/2019-01/", True),
    ("/p/2019*/*.jpg", "/p/2020-01/", False),  # pruned: no listing at all
    ("/p/2019*/*.jpg", "/p/2019-01/deeper/", False),  # deeper than the pattern's folders
    ("/p/*/**/*.jpg", "/p/a/b/c/", True),
    ("/p/*.jpg", "/p/a/", False),
])
def test_folders_that_cannot_hold_a_match_are_not_listed(pattern: str, folder: str,
                                                         may: bool) -> None:
    assert Glob(pattern).may_hold_matches(folder) is may


def _tree(root: Path, folders: int, files: int) -> set[str]:
    made = set()
    for f in range(folders):
        for i in range(files):
            path = root / f"d{f:03d}" / ("sub" if i % 2 else "") / f"img{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x" * (i + 1))
            made.add(str(path))
    (root / "top.jpg").write_bytes(b"top")
    (root / "notes.txt").write_bytes(b"no")
    return made | {str(root / "top.jpg")}


@pytest.fixture()
def counted_scandir(monkeypatch: pytest.MonkeyPatch) -> Counter:
    calls: Counter = Counter()
    real = os.scandir

    def scandir(path: str) -> object:
        if isinstance(path, str):  # other callers may pass a file descriptor
            calls[os.path.normpath(path)] += 1
        return real(path)

    monkeypatch.setattr(listers.os, "scandir", scandir)
    return calls


def _listed(pattern: str) -> tuple[list[str], int]:
    found, parts = [], 0
    for item in split(pattern):
        if isinstance(item, Part):
            parts += 1
            found.extend(e.path for e in list_part(item))
        else:
            found.append(item.path)
    return found, parts


def test_every_folder_is_listed_exactly_once(tmp_path: Path, counted_scandir: Counter) -> None:
    expected = _tree(tmp_path, folders=80, files=4)
    found, parts = _listed(f"{tmp_path}/**/*.jpg")
    scanned = dict(counted_scandir)  # before the checks below scan the tree themselves
    assert sorted(found) == sorted(expected), "each match once, the top level included"
    assert parts >= MIN_PARTS, "enough folders to spread over workers"
    folders = {os.path.normpath(str(p)) for p in tmp_path.rglob("*") if p.is_dir()}
    folders.add(os.path.normpath(str(tmp_path)))
    assert set(scanned) == folders and set(scanned.values()) == {1}


def test_a_deep_narrow_tree_is_split_a_few_levels_down(tmp_path: Path) -> None:
    for year in ("2023", "2024"):
        for month in range(1, 13):
            for day in range(1, 4):
                path = tmp_path / year / f"{month:02d}" / f"{day:02d}" / "a.jpg"
                path.parent.mkdir(parents=True)
                path.write_bytes(b"x")
    found, parts = _listed(f"{tmp_path}/**/*.jpg")
    assert len(found) == 72 and parts >= 24, "two years alone would be two workers"


def test_entries_carry_size_and_time(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"12345")
    [entry] = [e for e in split(f"{tmp_path}/*.jpg") if isinstance(e, Entry)]
    assert entry.size == 5 and entry.modified == pytest.approx((tmp_path / "a.jpg").stat().st_mtime)
    assert list(split(str(tmp_path / "a.jpg"))) == [entry], "a plain path is one stat"
    assert list(split(str(tmp_path / "missing.jpg"))) == []


def test_first_match_stops_listing_early(tmp_path: Path, counted_scandir: Counter) -> None:
    _tree(tmp_path, folders=100, files=2)
    assert first_match(f"{tmp_path}/d0*/*.jpg") is not None
    assert sum(counted_scandir.values()) < 10, "the launcher does not list the whole tree"
    assert first_match(f"{tmp_path}/**/*.gif") is None


def test_links_are_followed_once_and_loops_are_not(tmp_path: Path) -> None:
    lib, other = tmp_path / "lib", tmp_path / "other"
    for folder in (lib / "sub", lib / "a", lib / "b", other):
        folder.mkdir(parents=True)
    for path in (lib / "x.jpg", lib / "b" / "y.jpg", other / "z.jpg"):
        path.write_bytes(b"jpeg")
    (lib / "sub" / "loop").symlink_to("..")  # back to lib: would be listed forever
    (lib / "a" / "to_b").symlink_to("../b")  # a and b link to each other: a loop of two
    (lib / "b" / "to_a").symlink_to("../a")
    (lib / "alias").symlink_to("../other")  # a folder elsewhere: followed
    paths = sorted(e.path[len(str(lib)) + 1:] for e in listers.LocalLister().walk(f"{lib}/"))
    assert paths == ["a/to_b/y.jpg", "alias/z.jpg", "b/y.jpg", "x.jpg"]


def test_a_link_that_leads_nowhere_is_listed_so_it_becomes_an_error_row(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"jpeg")
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "nowhere" / "x.jpg")
    (tmp_path / "self.jpg").symlink_to("self.jpg")  # a loop of one: stat fails with ELOOP
    entries = {Path(e.path).name: e for e in listers.LocalLister().walk(f"{tmp_path}/")}
    assert set(entries) == {"a.jpg", "gone.jpg", "self.jpg"}
    assert entries["gone.jpg"].size is None and entries["a.jpg"].size == 4
