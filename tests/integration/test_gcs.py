"""gs:// end to end: photos uploaded to a local GCS emulator (gcp-storage-emulator, port 0), the
real pipeline run with --input 'gs://bucket/**/*.jpg' and --output gs://bucket/out against the
simulator, and the Parquet read back from the emulator with google-cloud-storage.

Credentials: google-cloud-storage talks to STORAGE_EMULATOR_HOST, but Beam first looks for
Application Default Credentials and, finding none, retries for ~27 s (measured) per process.
GOOGLE_APPLICATION_CREDENTIALS pointing at a credentials file that already holds a token (and
whose token URL is a closed loopback port) makes that look-up succeed at once without any network;
the emulator ignores the token.
"""

from __future__ import annotations

import io
import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from beam_caption.simulator import running_simulator
from tests.fixtures.gcs_emulator import gcs_emulator
from tests.fixtures.photos import make_small_photos
from tests.integration.pipeline_helpers import IN_MEMORY, run_cli

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-test-gcs-" + "q7" * 12
BUCKET = "photos"
# Nested prefixes for ** to find (a non-JPEG beside them must be skipped). In Beam's globs
# `**/*.jpg` needs at least one folder level: a photo at the bucket root needs `**.jpg`.
UPLOADS = {"2019/a/photo00000.jpg": 0, "2019/b/photo00001.jpg": 1, "2020/c/d/photo00002.jpg": 2,
           "2021/e/photo00003.jpg": 3}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A GCS emulator on a free port holding gs://photos; yields the environment that reaches it."""
    with gcs_emulator(tmp_path_factory.mktemp("adc")) as (_, env), \
            pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        yield env


@pytest.fixture(scope="module")
def client(emulator: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> storage.Client:
    """A storage client on the emulator, with the photos uploaded."""
    gcs = storage.Client(project="test", credentials=AnonymousCredentials())
    bucket = gcs.create_bucket(BUCKET)
    photos = make_small_photos(tmp_path_factory.mktemp("photos"), len(UPLOADS))
    for name, index in UPLOADS.items():
        bucket.blob(name).upload_from_filename(str(photos[index]))
    bucket.blob("2019/notes.txt").upload_from_string(b"not a photo")
    return gcs


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Refuse (and record) any connection beyond loopback."""
    attempts: list[str] = []
    real_connect = socket.socket.connect

    def connect(sock: socket.socket, address: Any) -> Any:
        if isinstance(address, tuple) and address[0] != "localhost" and \
                not ipaddress.ip_address(address[0]).is_loopback:
            attempts.append(str(address))
            raise OSError(f"test guard: no network beyond loopback ({address})")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempts


def read_parquet(gcs: storage.Client, prefix: str) -> list[dict[str, Any]]:
    blobs = [b for b in gcs.list_blobs(BUCKET, prefix=prefix) if b.name.endswith(".parquet")]
    tables = [pq.read_table(io.BytesIO(blob.download_as_bytes())) for blob in blobs]
    return pa.concat_tables(tables).to_pylist() if tables else []


def caption(*args: str) -> int:
    monkey = pytest.MonkeyPatch()
    monkey.setenv("BC_GCS_KEY", KEY)
    try:
        with running_simulator(api_key=KEY) as sim:
            return run_cli("run", *args, "--base-url", sim.base_url, "--api-key-env",
                           "BC_GCS_KEY", *IN_MEMORY)
    finally:
        monkey.undo()


def test_a_gs_glob_is_captioned_into_gs_parquet(client: storage.Client, loopback_only) -> None:
    started = time.monotonic()
    assert caption("--input", f"gs://{BUCKET}/**/*.jpg", "--output", f"gs://{BUCKET}/out") == 0
    elapsed = time.monotonic() - started
    captions = read_parquet(client, "out/captions-")
    assert sorted(row["uri"] for row in captions) == sorted(f"gs://{BUCKET}/{n}" for n in UPLOADS)
    assert all(row["caption"] and row["prompt_tokens"] > 0 for row in captions)
    assert read_parquet(client, "out/errors-") == []
    summary = json.loads(client.bucket(BUCKET).blob("out/run-summary.json").download_as_bytes())
    assert summary["captions"] == len(UPLOADS) and summary["errors"] == 0
    assert loopback_only == []
    assert elapsed < 20, f"{elapsed:.1f}s: did a credential look-up retry?"


def test_an_existing_gs_output_is_refused_then_overwritten(client: storage.Client) -> None:
    args = ("--input", f"gs://{BUCKET}/2019/**/*.jpg", "--output", f"gs://{BUCKET}/again")
    assert caption(*args) == 0
    assert caption(*args) == 2  # refuses to clobber
    assert caption(*args, "--overwrite") == 0
    assert len(read_parquet(client, "again/captions-")) == 2


def test_a_prefix_with_no_matches_is_one_clear_line(client: storage.Client, capsys) -> None:
    code = caption("--input", f"gs://{BUCKET}/1999/**/*.jpg", "--output", f"gs://{BUCKET}/none")
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == f"beam-caption: error: --input 'gs://{BUCKET}/1999/**/*.jpg' matched no files"


def test_a_missing_input_bucket_is_one_line_naming_it(client: storage.Client, capsys) -> None:
    code = caption("--input", "gs://no-such-bucket/**/*.jpg", "--output", f"gs://{BUCKET}/x")
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "gs://no-such-bucket" in err


def test_a_missing_input_bucket_says_so(client: storage.Client, capsys) -> None:
    caption("--input", "gs://no-such-bucket/**/*.jpg", "--output", f"gs://{BUCKET}/x")
    assert "does not exist" in capsys.readouterr().err


def test_a_missing_output_bucket_is_one_clear_line(client: storage.Client, capsys) -> None:
    code = caption("--input", f"gs://{BUCKET}/**/*.jpg", "--output", "gs://no-such-bucket/out")
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "gs://no-such-bucket" in err


def test_credential_look_up_costs_no_retries_in_a_fresh_process(emulator, client) -> None:
    """The first gs:// listing of a new process (what every local worker pays): ~1 s of imports
    and listing, not Beam's ~27 s of credential retries."""
    code = ("import time; t = time.monotonic()\n"
            "from apache_beam.io.filesystems import FileSystems\n"
            f"found = FileSystems.match(['gs://{BUCKET}/**/*.jpg'])[0].metadata_list\n"
            "print(len(found), round(time.monotonic() - t, 2))")
    env = dict(os.environ, **emulator, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert int(out[0]) == len(UPLOADS)
    assert float(out[1]) < 10, f"first gs:// match took {out[1]} s"


def test_the_answer_journal_on_gs_is_an_object_per_flush(client: storage.Client) -> None:
    # Object stores cannot append: the journal writes a new small object every second or so
    # (and at flush), each visible whole or not at all, and readers skip nothing.
    from beam_caption.pipeline.journal import (
        AnswerJournal,
        delete_journals,
        journal_files,
        journal_runs,
        read_journal_file,
    )

    output = f"gs://{BUCKET}/journaled"
    journal = AnswerJournal(f"{output}/_journal/run-1")
    for i in range(3):
        journal.append("captions", {"uri": f"gs://b/{i}.jpg", "request_key": f"k{i}",
                                    "caption": f"photo {i}"})
    deadline = time.monotonic() + 10
    while not journal_files(output):
        assert time.monotonic() < deadline, "no journal object within seconds"
        time.sleep(0.1)
    journal.append("errors", {"uri": "gs://b/x.jpg", "request_key": "kx", "cost_usd": 1e-5})
    journal.flush()  # what a bundle's end and an interrupt do
    rows = [pair for path in journal_files(output) for pair in read_journal_file(path)]
    assert sorted(row["request_key"] for _, row in rows) == ["k0", "k1", "k2", "kx"]
    assert journal_runs(output) == ("run-1",)
    assert delete_journals(output, ["run-1"]) >= 2, "the timed object and the flushed one"
    assert journal_files(output) == []
    journal.close()
