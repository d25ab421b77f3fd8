"""The CLI's contract: bad flags are one line and exit 2; help teaches; no tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from beam_caption.cli import main
from beam_caption.options import RUN_OPTIONS, unknown_beam_flags


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_run_help_documents_every_option_and_has_examples(capsys) -> None:
    code, out, _ = run(["run", "--help"], capsys)
    assert code == 0
    for opt in RUN_OPTIONS:
        assert opt.flag in out, opt.flag
    assert "examples:" in out and "duckdb" in out


@pytest.mark.parametrize("argv, fragment", [
    (["run", "--output", "x", "--max-side", "-3", "--input", "a"], "--max-side"),
    (["run", "--output", "x", "--input", "a", "--detail", "ultra"], "--detail"),
    (["run", "--input", "a"], "--output"),
    (["run", "--output", "x"], "--input"),
    (["run", "--output", "x", "--input", "a", "--no-such-flag", "1"], "--no-such-flag"),
    (["frobnicate"], "invalid choice"),
    # Values a settings object would refuse with a traceback are refused by the flag itself.
    (["run", "--output", "x", "--input", "a", "--near-dedupe-distance", "999"],
     "--near-dedupe-distance: must be between 0 and 256"),
    (["run", "--output", "x", "--input", "a", "--video-frames", "500"],
     "--video-frames: must be between 1 and 32"),
    (["run", "--output", "x", "--input", "a", "--video-frames", "0"], "--video-frames"),
    # Infinite or absurd numbers overflowed the nano-dollar budget and aiohttp's timeout.
    (["run", "--output", "x", "--input", "a", "--max-cost-usd", "inf"], "--max-cost-usd"),
    (["run", "--output", "x", "--input", "a", "--max-cost-usd", "1e300"], "--max-cost-usd"),
    (["run", "--output", "x", "--input", "a", "--request-timeout", "inf"], "--request-timeout"),
    (["run", "--output", "x", "--input", "a", "--request-timeout", "0"], "--request-timeout"),
    (["run", "--output", "x", "--input", "a", "--rpm", "nan"], "--rpm"),
    (["run", "--output", "x", "--input", "a", "--tpm", "1e-300"], "--tpm"),
    (["run", "--output", "x", "--input", "a", "--rpm", "0.5"], "--rpm"),
])
def test_bad_flags_are_one_line_and_exit_2(argv, fragment, capsys) -> None:
    code, _, err = run(argv, capsys)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, err
    assert fragment in lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize("argv, fragment", [
    (["--model", "gpt-5.4-nano", "--temperature", "0.5"], "temperature"),
    (["--model", "no-such-model", "--max-cost-usd", "1"], "--prices"),
    (["--simulate", "--base-url", "http://127.0.0.1:9/v1"], "--simulate"),
    (["--base-url", "http://user:sk-in-the-url@127.0.0.1:9/v1"], "must not hold credentials"),
    (["--base-url", "http://127.0.0.1:9/v1?key=sk-in-the-url"], "must not hold a query string"),
    # The key itself given as the file by mistake: refused without printing it.
    (["--base-url", "http://10.0.0.1:9/v1", "--api-key-file", "sk-in-the-url-123456"],
     "cannot read --api-key-file (the value given)"),
])
def test_bad_combinations_are_one_line_and_exit_2(argv, fragment, tmp_path, capsys) -> None:
    (tmp_path / "a.jpg").write_bytes(b"x")
    code, _, err = run(["run", "--input", str(tmp_path / "*.jpg"), "--output",
                        str(tmp_path / "out"), *argv], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and fragment in err, err
    assert "sk-in-the-url" not in err


def test_a_glob_that_matches_nothing_is_a_clear_error(tmp_path: Path, capsys) -> None:
    code, _, err = run(["run", "--input", str(tmp_path / "*.jpg"), "--output",
                        str(tmp_path / "out"), "--base-url", "http://127.0.0.1:9/v1"], capsys)
    assert code == 2
    assert "matched no files" in err


def test_a_remote_endpoint_without_a_key_is_refused_before_any_work(tmp_path, capsys,
                                                                      monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    (tmp_path / "a.jpg").write_bytes(b"x")
    code, _, err = run(["run", "--input", str(tmp_path / "*.jpg"), "--output",
                        str(tmp_path / "out"), "--base-url", "https://api.example.invalid/v1"],
                       capsys)
    assert code == 2
    assert "OPENAI_API_KEY" in err


def test_existing_output_needs_overwrite(tmp_path: Path, capsys) -> None:
    (tmp_path / "a.jpg").write_bytes(b"x")
    out = tmp_path / "out"
    out.mkdir()
    (out / "captions-00000-of-00001.parquet").write_bytes(b"old")
    code, _, err = run(["run", "--input", str(tmp_path / "*.jpg"), "--output", str(out),
                        "--base-url", "http://127.0.0.1:9/v1"], capsys)
    assert code == 2
    assert "--overwrite" in err


def test_beam_flags_pass_through_and_unknown_ones_are_named() -> None:
    flags = ["--runner", "DataflowRunner", "--project", "p", "--region=r",
             "--direct_num_workers=2", "--temp_location", "gs://t/x", "--bogus=1"]
    assert unknown_beam_flags(flags) == ["--bogus=1"]


def test_a_glob_the_shell_expanded_is_refused_not_captioned_one_file_of(
        tmp_path: Path, capsys) -> None:
    files = [str(tmp_path / f"img{i}.jpg") for i in range(3)]
    # `--input photos/*.jpg` unquoted: the shell passes the second and third files bare.
    code, _, err = run(["run", "--input", *files, "--output", str(tmp_path / "out"),
                        "--base-url", "http://127.0.0.1:9/v1"], capsys)
    assert code == 2 and "quote it" in err and files[1] in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run(["estimate", "--input", *files], capsys)
    assert code == 2 and "quote it" in err


def test_python_m_beam_caption_works() -> None:
    result = subprocess.run([sys.executable, "-m", "beam_caption", "--version"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.startswith("beam-caption ")


def test_an_output_path_with_glob_characters_is_refused_before_anything_is_paid(
        tmp_path: Path, capsys) -> None:
    (tmp_path / "a.jpg").write_bytes(b"x")
    for mode in ("realtime", "batch"):
        code, _, err = run(["run", "--input", str(tmp_path / "*.jpg"), "--output",
                            str(tmp_path / "odd[1]"), "--mode", mode, "--base-url",
                            "http://127.0.0.1:9/v1"], capsys)
        assert code == 2 and "glob characters" in err and len(err.strip().splitlines()) == 1
    # Refused before storage is contacted (a gs:// output would reach for credentials first).
    code, _, err = run(["run", "--input", str(tmp_path / "*.jpg"), "--output", "gs://b/o*",
                        "--base-url", "http://127.0.0.1:9/v1"], capsys)
    assert code == 2 and "glob characters" in err


def test_a_manifest_beam_cannot_read_is_refused_not_read_as_empty(tmp_path: Path,
                                                                   capsys) -> None:
    folder = tmp_path / "trip [1]"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"x")
    (folder / "list.txt").write_text("a.jpg\n")
    for command in (["run", "--output", str(tmp_path / "out"), "--base-url",
                     "http://127.0.0.1:9/v1"], ["estimate"]):
        code, _, err = run([command[0], "--manifest", str(folder / "list.txt"), *command[1:]],
                           capsys)
        assert code == 2 and "cannot read a file whose path holds '['" in err, err
        assert len(err.strip().splitlines()) == 1
