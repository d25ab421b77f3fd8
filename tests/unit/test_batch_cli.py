"""`beam-caption batch`: polling backoff, endpoint/key overrides, help and flag checks."""

from __future__ import annotations

from typing import Any

import pytest

from beam_caption.batch import ledger as bs
from beam_caption.batch.waiting import POLL_CAP_FACTOR, next_delay
from beam_caption.cli import main
from beam_caption.cli.batch import Clients

RECORDED = {"base_url": "https://api.example.invalid/v1", "api_key_env": "OPENAI_API_KEY",
            "api_key_file": "/secrets/key.txt", "api_key_secret": None}


def test_polling_starts_fast_backs_off_and_is_capped() -> None:
    delays, delay = [], 0.0
    for changed in (True, True, True, True, True, True, True, False, False, False, True):
        delay = next_delay(delay, changed=changed, interval_s=30.0)
        delays.append(delay)
    # Quick first checks, the interval while batches progress, 10x it while nothing moves.
    assert delays == [1, 2, 4, 8, 16, 30, 30, 60, 120, 240, 30]
    assert next_delay(240.0, changed=False, interval_s=30.0) == POLL_CAP_FACTOR * 30.0
    assert next_delay(0.0, changed=False, interval_s=0.05) == 0.05, "never above a short interval"


def _run(endpoint: dict[str, Any]) -> bs.RunRecord:
    return bs.RunRecord(run_id="r", created_at="t", endpoint=endpoint, info={})


def test_clients_use_the_recorded_endpoint_unless_the_command_line_overrides_it() -> None:
    made: list[tuple[Any, ...]] = []

    def factory(*where: Any) -> tuple[Any, ...]:
        made.append(where)
        return where

    assert Clients(factory=factory).for_run(_run(RECORDED)) == (
        "https://api.example.invalid/v1", "OPENAI_API_KEY", "/secrets/key.txt", None)
    # A key source on the command line replaces every recorded one.
    assert Clients({"api_key_env": "OTHER", "base_url": None}, factory=factory).for_run(
        _run(RECORDED)) == ("https://api.example.invalid/v1", "OTHER", None, None)
    clients = Clients({"base_url": "http://127.0.0.1:9/v1"}, factory=factory)
    assert clients.for_run(_run(RECORDED)) is clients.for_run(_run(RECORDED)), "one per endpoint"
    assert len(made) == 3


def test_batch_help_names_every_action(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["batch", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(action in out for action in ("submit", "status", "collect", "cancel"))


@pytest.mark.parametrize("argv, fragment", [
    (["batch", "frobnicate", "out"], "invalid choice"),
    (["run", "--input", "a", "--output", "o", "--mode", "later"], "--mode"),
    (["run", "--input", "a", "--output", "o", "--poll-interval", "0"], "--poll-interval"),
    (["run", "--input", "a", "--output", "o", "--batch-max-bytes", "-1"], "--batch-max-bytes"),
])
def test_bad_batch_flags_are_one_line_and_exit_2(argv: list[str], fragment: str,
                                                 capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and fragment in err and len(err.strip().splitlines()) == 1


def test_batch_mode_refuses_a_spend_cap_and_simulate_without_wait(tmp_path, capsys) -> None:
    (tmp_path / "a.jpg").write_bytes(b"x")
    base = ["run", "--input", str(tmp_path / "*.jpg"), "--output", str(tmp_path / "out"),
            "--mode", "batch"]
    assert main([*base, "--max-cost-usd", "1", "--base-url", "http://127.0.0.1:9/v1"]) == 2
    assert "--max-cost-usd" in capsys.readouterr().err
    assert main([*base, "--simulate", "--no-wait"]) == 2
    assert "--wait" in capsys.readouterr().err
