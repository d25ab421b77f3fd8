"""The API key from Secret Manager: a fake client injected at the seam (secrets.use_client_factory),
one fetch per process, safe one-line errors, and the key in no log line or message."""

from __future__ import annotations

import logging
import sys
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from google.api_core import exceptions as gexc

from beam_caption.auth import secrets
from beam_caption.auth.keys import resolve_api_key
from beam_caption.errors import ConfigError

NAME = "projects/demo/secrets/openai-api-key/versions/4"


class FakeSecretManager:
    """Answers access_secret_version like the real client; counts calls; can fail."""

    def __init__(self, value: bytes = b"", error: Exception | None = None,
                 transient: list[Exception] | None = None) -> None:
        self.value = value
        self.error = error
        self.transient = list(transient or [])
        self.requests: list[tuple[dict[str, str], float]] = []

    def access_secret_version(self, request: dict[str, str], timeout: float,
                              retry: Any = "the library's default") -> Any:
        assert retry is None, "google-api-core's retry must be off: ours is the one layer"
        self.requests.append((request, timeout))
        if self.transient:
            raise self.transient.pop(0)
        if self.error is not None:
            raise self.error
        return SimpleNamespace(payload=SimpleNamespace(data=self.value))


def new_key() -> str:
    # Unique per test: keys.redact_in_logs installs its filter once per distinct key.
    return "sk-proj-" + uuid.uuid4().hex


def test_the_key_is_fetched_once_per_process_and_returned() -> None:
    key = new_key()
    fake = FakeSecretManager(f"{key}\n".encode())
    with secrets.use_client_factory(lambda: fake):
        assert resolve_api_key("UNSET_ENV_VAR", None, NAME) == key
        assert resolve_api_key("UNSET_ENV_VAR", None, NAME) == key
        assert secrets.fetch_secret(NAME) == key
    assert fake.requests == [({"name": NAME}, 30.0)]


def test_the_secret_wins_over_the_environment_and_the_file(tmp_path: Path, monkeypatch) -> None:
    key = new_key()
    monkeypatch.setenv("BC_KEY", "sk-from-env-" + "x" * 8)
    (tmp_path / "key").write_text("sk-from-file-" + "y" * 8)
    with secrets.use_client_factory(lambda: FakeSecretManager(key.encode())):
        assert resolve_api_key("BC_KEY", str(tmp_path / "key"), NAME) == key
    assert resolve_api_key("BC_KEY", None, None) == "sk-from-env-" + "x" * 8


def test_a_name_without_version_means_latest() -> None:
    fake = FakeSecretManager(new_key().encode())
    with secrets.use_client_factory(lambda: fake):
        secrets.fetch_secret("projects/demo/secrets/openai-api-key")
    assert fake.requests[0][0] == {"name": "projects/demo/secrets/openai-api-key/versions/latest"}


@pytest.mark.parametrize("name", [
    "openai-api-key", "projects/demo/secrets/", "projects/demo/secrets/a/versions/",
    "projects/demo/secrets/a/versions/1/extra", "sk-proj-abc", "projects/de mo/secrets/a",
])
def test_a_malformed_name_is_a_config_error_before_any_call(name: str) -> None:
    fake = FakeSecretManager(b"unused")
    with secrets.use_client_factory(lambda: fake), pytest.raises(ConfigError, match="projects/"):
        secrets.fetch_secret(name)
    assert fake.requests == []


@pytest.mark.parametrize(("error", "fragment", "attempts"), [
    (gexc.NotFound("Secret [projects/1/secrets/x] not found"), "not found", 1),
    (gexc.PermissionDenied("denied"), "roles/secretmanager.secretAccessor", 1),
    (gexc.ServiceUnavailable("try later"), "ServiceUnavailable", 4),  # retried, then given up
])
def test_failures_are_one_safe_line_and_are_not_cached(error: Exception, fragment: str,
                                                       attempts: int, monkeypatch) -> None:
    monkeypatch.setattr(secrets, "_sleep", lambda seconds: None)
    key = new_key()
    fake = FakeSecretManager(key.encode(), error=error)
    with secrets.use_client_factory(lambda: fake):
        with pytest.raises(ConfigError) as caught:
            secrets.fetch_secret(NAME)
        message = str(caught.value)
        assert fragment in message and NAME in message and "\n" not in message
        fake.error = None  # the next setup (a retried bundle) tries again
        assert secrets.fetch_secret(NAME) == key
    assert len(fake.requests) == attempts + 1


def test_an_error_that_echoes_the_value_does_not_leak_it() -> None:
    key = new_key()
    fake = FakeSecretManager(error=RuntimeError(f"upstream said: {key}"))
    with secrets.use_client_factory(lambda: fake), pytest.raises(ConfigError) as caught:
        secrets.fetch_secret(NAME)
    assert key not in str(caught.value) and caught.value.__cause__ is None


@pytest.mark.parametrize(("payload", "fragment"), [(b"  \n", "is empty"),
                                                   (b"\xff\xfe", "not UTF-8")])
def test_an_empty_or_binary_secret_is_a_config_error(payload: bytes, fragment: str) -> None:
    with secrets.use_client_factory(lambda: FakeSecretManager(payload)), \
            pytest.raises(ConfigError, match=fragment):
        secrets.fetch_secret(NAME)


def test_without_the_client_library_the_error_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "google.cloud.secretmanager", None)  # import fails
    with pytest.raises(ConfigError, match=r"beam-caption\[secrets\]"):
        secrets.fetch_secret(NAME)


def test_the_key_is_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    key = new_key()
    caplog.set_level(logging.DEBUG)
    with secrets.use_client_factory(lambda: FakeSecretManager(key.encode())):
        assert resolve_api_key("UNSET_ENV_VAR", None, NAME) == key
        # Whatever logs the key afterwards (ours, a library's) is redacted.
        logging.getLogger("beam_caption.engine.engine").warning("sending with key %s", key)
        logging.getLogger("urllib3").debug("Authorization: Bearer %s", key)
    assert caplog.records, "nothing was captured: the check below would be vacuous"
    assert key not in caplog.text
    assert "[REDACTED]" in caplog.text


@pytest.mark.slow
def test_workers_read_the_key_from_secret_manager_in_setup(tmp_path: Path, monkeypatch) -> None:
    """The real pipeline (FnApiRunner, in this process) against a simulator that demands the key:
    captions come back only if CaptionImages' setup fetched it through the seam."""
    from beam_caption.simulator import running_simulator
    from tests.fixtures.photos import make_small_photos
    from tests.integration.pipeline_helpers import IN_MEMORY, read_rows, run_cli

    key = new_key()
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    make_small_photos(tmp_path / "in", 3)
    fake = FakeSecretManager(key.encode())
    with running_simulator(api_key=key) as sim, secrets.use_client_factory(lambda: fake):
        code = run_cli("run", "--input", str(tmp_path / "in" / "*.jpg"), "--output",
                       str(tmp_path / "out"), "--base-url", sim.base_url,
                       "--api-key-secret", NAME, *IN_MEMORY)
    assert code == 0
    assert len(read_rows(tmp_path / "out", "captions")) == 3
    assert read_rows(tmp_path / "out", "errors") == []
    assert fake.requests == [({"name": NAME}, 30.0)]  # once for the process, not per bundle


def test_transient_failures_are_retried_by_the_one_retry_layer(monkeypatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(secrets, "_sleep", waits.append)
    key = new_key()
    fake = FakeSecretManager(key.encode(), transient=[gexc.ServiceUnavailable("down"),
                                                      gexc.TooManyRequests("slow down")])
    with secrets.use_client_factory(lambda: fake):
        assert secrets.fetch_secret(NAME) == key
    assert len(fake.requests) == 3 and len(waits) == 2
    assert waits[0] <= 0.5 and waits[1] <= 1.0, "the engine's backoff: full jitter, doubling"


def test_a_permanent_failure_is_not_retried(monkeypatch) -> None:
    monkeypatch.setattr(secrets, "_sleep", lambda s: pytest.fail("no retry for a 403"))
    fake = FakeSecretManager(error=gexc.PermissionDenied("no"))
    with secrets.use_client_factory(lambda: fake), pytest.raises(ConfigError, match="permission"):
        secrets.fetch_secret(NAME)
    assert len(fake.requests) == 1


# -- the launcher's check before a remote job is submitted --------------------------------------

def test_the_launcher_check_reads_the_secret_once_and_keeps_nothing() -> None:
    key = new_key()
    fake = FakeSecretManager(key.encode())
    with secrets.use_client_factory(lambda: fake):
        assert secrets.check_secret_access(NAME) is None
        assert fake.requests == [({"name": NAME}, 30.0)]
        # Not cached: the workers' first fetch (here, this process's) reads it again.
        assert secrets.fetch_secret(NAME) == key
    assert len(fake.requests) == 2


@pytest.mark.parametrize(("error", "fragment"), [
    (gexc.NotFound("Secret [projects/1/secrets/x] not found"), "not found"),
    (gexc.PermissionDenied("denied"), "roles/secretmanager.secretAccessor"),
])
def test_the_launcher_check_fails_in_one_line(error: Exception, fragment: str) -> None:
    fake = FakeSecretManager(new_key().encode(), error=error)
    with secrets.use_client_factory(lambda: fake), pytest.raises(ConfigError) as caught:
        secrets.check_secret_access(NAME)
    message = str(caught.value)
    assert fragment in message and NAME in message and "\n" not in message
    assert "before submitting" in message and len(fake.requests) == 1


def test_the_launcher_check_goes_through_the_one_retry_layer(monkeypatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(secrets, "_sleep", waits.append)
    fake = FakeSecretManager(new_key().encode(), transient=[gexc.ServiceUnavailable("down")])
    with secrets.use_client_factory(lambda: fake):
        secrets.check_secret_access(NAME)
    assert len(fake.requests) == 2 and len(waits) == 1


def test_the_launcher_check_refuses_an_empty_secret_and_a_malformed_name() -> None:
    fake = FakeSecretManager(b" \n")
    with secrets.use_client_factory(lambda: fake):
        with pytest.raises(ConfigError, match="is empty"):
            secrets.check_secret_access(NAME)
        with pytest.raises(ConfigError, match="projects/"):
            secrets.check_secret_access("openai-api-key")
    assert len(fake.requests) == 1
