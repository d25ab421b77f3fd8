"""The answer journal on local disk: a line per answer, on disk at once, read back whole."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from beam_caption.layout import JOURNAL_DIR, run_journal_dir
from beam_caption.pipeline import journal as jr


def _row(i: int) -> dict:
    return {"uri": f"/p/{i}.jpg", "request_key": f"k{i}", "caption": f"photo {i}",
            "tags": ["a", "b"], "box": {"x": 1, "y": None},
            "created_at": datetime(2026, 11, 29, 12, 0, i, tzinfo=UTC)}


def test_each_answer_is_on_disk_as_soon_as_it_is_appended(tmp_path: Path) -> None:
    journal = jr.AnswerJournal(run_journal_dir(str(tmp_path), "run-1"))
    journal.append(jr.CAPTIONS, _row(0))
    # No flush, no close: another process (a resume after kill -9) reads it already.
    [path] = jr.journal_files(str(tmp_path))
    assert [row for _, row in jr.read_journal_file(path)] == [_row(0)]
    journal.append(jr.ERRORS, {"uri": "/p/x.jpg", "request_key": "kx", "cost_usd": 2e-5})
    pairs = list(jr.read_journal_file(path))
    assert [table for table, _ in pairs] == ["captions", "errors"]
    journal.close()


def test_a_line_cut_short_by_a_crash_is_skipped(tmp_path: Path) -> None:
    journal = jr.AnswerJournal(run_journal_dir(str(tmp_path), "run-1"))
    journal.append(jr.CAPTIONS, _row(1))
    journal.close()
    [path] = jr.journal_files(str(tmp_path))
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(jr.encode_line(jr.CAPTIONS, _row(2))[:40])  # the process died mid-line
    assert [row["request_key"] for _, row in jr.read_journal_file(path)] == ["k1"]
    assert jr.decode_line('{"table": "other", "row": {}}') is None
    assert jr.decode_line("not json") is None


def test_runs_are_listed_and_deleted_one_by_one(tmp_path: Path) -> None:
    out = str(tmp_path)
    for run in ("run-a", "run-b"):
        journal = jr.AnswerJournal(run_journal_dir(out, run))
        journal.append(jr.CAPTIONS, _row(3))
        journal.close()
    assert jr.journal_runs(out) == ("run-a", "run-b")
    assert jr.delete_journals(out, ["run-a"]) == 1
    assert jr.journal_runs(out) == ("run-b",)
    jr.delete_journals(out, ["run-b"])
    assert not (tmp_path / JOURNAL_DIR).exists(), "empty folders go too"


def test_the_process_journal_is_one_per_run(tmp_path: Path) -> None:
    first = jr.process_journal(str(tmp_path / "a"))
    assert jr.process_journal(str(tmp_path / "a")) is first
    assert jr.process_journal(str(tmp_path / "b")) is not first
