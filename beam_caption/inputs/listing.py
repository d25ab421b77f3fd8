"""Listing a glob on many workers: split the tree at its literal prefix, then list each part once.

Beam's MatchAll lists a pattern in one call on one worker and holds every match in memory; for
50 million objects that is ~50,000 list pages fetched one after another. Here a glob such as
`gs://bucket/photos/**/*.jpg` is listed in two steps:

1. `split` (one worker): list the literal prefix (`gs://bucket/photos/`) one level deep, with a
   delimiter, and a level or two further while there are few sub-folders. Files found on the way
   are matched there; each sub-folder that could hold a match becomes a `Part`.
2. the parts are reshuffled, and `list_part` (many workers) lists each one recursively, streaming
   page by page, never holding more than a page.

Every prefix is listed exactly once, and `**` means zero or more folders in one pattern (no
second pattern for the zero case). gs:// and local paths are split this way; other schemes
(s3://, ...) fall back to one Beam match per pattern.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from beam_caption.inputs.listers import Entry, lister_for

# Split a level further while there are fewer parts than this (and no deeper than _MAX_DEPTH).
MIN_PARTS = 64
_MAX_DEPTH = 3
_WILDCARD = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Glob:
    """An input pattern: where its literal part ends, and how a path is matched against it."""

    text: str

    @property
    def root(self) -> str:
        """The folder up to the first wildcard, with a trailing slash (or the file itself)."""
        wild = _WILDCARD.search(self.text)
        if wild is None:
            return self.text
        return self.text[: self.text.rfind("/", 0, wild.start()) + 1]

    @property
    def has_wildcard(self) -> bool:
        """False for a plain path."""
        return _WILDCARD.search(self.text) is not None

    def matches(self, path: str) -> bool:
        """True when `path` matches the whole pattern (`**` crosses folders, `*` does not)."""
        return _compiled(self.text).fullmatch(path) is not None

    def may_hold_matches(self, folder: str) -> bool:
        """True unless no path under `folder` (ending in "/") can match."""
        rest = self.text[len(self.root):].split("/")
        parts = folder[len(self.root):].rstrip("/").split("/")
        for i, part in enumerate(parts):
            if "**" in rest[min(i, len(rest) - 1)]:
                return True  # crosses any number of folders from here
            if i >= len(rest) - 1:
                return False  # deeper than the pattern's folders go
            if _compiled(rest[i]).fullmatch(part) is None:
                return False
        return True


_CACHE: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    found = _CACHE.get(pattern)
    if found is None:
        found = _CACHE[pattern] = re.compile(_translate(pattern), re.DOTALL)
    return found


def _translate(pattern: str) -> str:
    """Glob -> regex: `**/` zero or more folders, `**` anything, `*` and `?` within a name."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:[^/]*/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2:]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1:end]
            negated = body.startswith("!")
            # Literal inside a set: a backslash, a "[" (Python warns of nested sets) and a
            # leading "^" (which would negate it).
            body = (body[1:] if negated else body).replace("\\", "\\\\").replace("[", "\\[")
            body = "\\" + body if body.startswith("^") else body
            out.append("[" + ("^" if negated else "") + body + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class Part:
    """A folder to list recursively for `pattern`'s matches (step 2)."""

    pattern: str
    folder: str


def split(pattern: str) -> Iterator[Part | Entry]:
    """Step 1: the parts of `pattern` to list on other workers, and the matches met on the way.

    Breadth first from the literal root, one delimiter listing per folder, until there are
    MIN_PARTS parts or _MAX_DEPTH levels. A pattern without a wildcard is one stat.
    """
    glob = Glob(pattern)
    lister = lister_for(pattern)
    if not glob.has_wildcard:
        yield from lister.stat(pattern)
        return
    if lister.walk_only:
        yield Part(pattern, glob.root)
        return
    level, depth = [glob.root], 0
    while level and depth < _MAX_DEPTH and len(level) < MIN_PARTS:
        deeper: list[str] = []
        for folder in level:
            for child in lister.children(folder):
                if isinstance(child, str):
                    if glob.may_hold_matches(child):
                        deeper.append(child)
                elif glob.matches(child.path):
                    yield child
        level, depth = deeper, depth + 1
    yield from (Part(pattern, folder) for folder in level)


def list_part(part: Part) -> Iterator[Entry]:
    """Step 2: every match of the part's pattern under its folder, streamed."""
    glob = Glob(part.pattern)
    for entry in lister_for(part.pattern).walk(part.folder):
        if glob.matches(entry.path):
            yield entry


def first_match(pattern: str) -> Entry | None:
    """The first file `pattern` matches, or None (the launcher's cheap check)."""
    for item in split(pattern):
        if isinstance(item, Entry):
            return item
        found = next(list_part(item), None)
        if found is not None:
            return found
    return None
