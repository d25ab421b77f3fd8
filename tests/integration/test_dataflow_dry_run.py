"""The job Dataflow would receive, built offline: Beam's DataflowRunner with --dry_run translates
the real `run` command (and the Flex Template entry point) without submitting anything.

Proves: the pipeline translates for Dataflow; neither the serialized options nor any pickled
function carries the API key; the grouping after input expansion (the fusion break) is in the
graph; a remote run refuses to launch without --api-key-secret, and reads the secret once (through
a fake Secret Manager client at secrets.use_client_factory) before it builds the job; a gs://
--schema is read by the launcher (from a GCS emulator); nothing connects beyond loopback.
"""

from __future__ import annotations

import base64
import bz2
import ipaddress
import json
import re
import runpy
import socket
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner
from apache_beam.runners.dataflow.internal import apiclient
from google.api_core import exceptions as gexc

from beam_caption.auth import secrets
from beam_caption.dataflow import template
from tests.fixtures.gcs_emulator import fill_bucket
from tests.fixtures.gcs_emulator import gcs_emulator as emulator
from tests.fixtures.photos import make_small_photos
from tests.integration.pipeline_helpers import run_cli
from tests.unit.test_secrets import FakeSecretManager

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SENTINEL = "sk-sentinel-" + "5eC2e7" * 6
# What the fake Secret Manager holds: read once by the launcher's check, never put in the job.
SECRET_VALUE = "sk-secret-" + "9dA4b1" * 6
SECRET = "projects/demo-project/secrets/openai-api-key/versions/7"
PROMPT = "Name the landmark in this photo (dry-run marker 7f3a)."
# As `make template-build` sets it in the launcher image: the worker image, pinned by digest.
IMAGE = "us-central1-docker.pkg.dev/demo-project/repo/beam-caption@sha256:" + "c0ffee42" * 8


class CapturingDataflowRunner(DataflowRunner):
    """Beam's DataflowRunner, unchanged, keeping each job it builds for the test to inspect."""

    jobs: ClassVar[list[apiclient.Job]] = []

    def run_pipeline(self, pipeline: Any, options: Any) -> Any:
        """Build the job as DataflowRunner does (a dry run returns before submitting)."""
        result = super().run_pipeline(pipeline, options)
        CapturingDataflowRunner.jobs.append(self.job)
        return result


DRY_RUN = [f"--runner={__name__}.CapturingDataflowRunner", "--dry_run=True", "--no_auth",
           "--sdk_location=container", "--project=demo-project", "--region=us-central1",
           "--temp_location=gs://demo-bucket/tmp", "--max_num_workers=3",
           "--machine_type=n1-standard-4"]


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Refuse (and record) any connection or name lookup beyond loopback."""
    attempts: list[str] = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def is_local(host: Any) -> bool:
        if host in (None, "localhost") or not isinstance(host, str):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    def connect(sock: socket.socket, address: Any) -> Any:
        if isinstance(address, tuple) and not is_local(address[0]):
            attempts.append(f"connect {address}")
            raise OSError(f"test guard: no network beyond loopback ({address})")
        return real_connect(sock, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not is_local(host):
            attempts.append(f"getaddrinfo {host}")
            raise socket.gaierror(f"test guard: no name lookups ({host})")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setenv("NO_GCE_CHECK", "true")
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)  # must end up nowhere in the job
    CapturingDataflowRunner.jobs.clear()
    return attempts


@pytest.fixture
def secret_manager() -> Iterator[FakeSecretManager]:
    """A Secret Manager holding SECRET_VALUE, behind the one seam (secrets.use_client_factory)."""
    fake = FakeSecretManager(SECRET_VALUE.encode())
    with secrets.use_client_factory(lambda: fake):
        yield fake


def key_is_nowhere(job: apiclient.Job) -> None:
    """Neither the launcher's environment key nor the secret's value is in the job."""
    text = job_json(job)
    raw = job.proto_pipeline.SerializeToString()
    payloads = unpacked_payloads(job.proto_pipeline)
    for key in (SENTINEL, SECRET_VALUE):
        assert key not in text and key.encode() not in raw and key.encode() not in payloads


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    make_small_photos(folder, 2)
    return folder


def job_json(job: apiclient.Job) -> str:
    """The job as the service would receive it, with the Environment (serialized pipeline options
    and display data) that DataflowApplicationClient.create_job_description adds after staging."""
    job.proto.environment = apiclient.Environment(
        packages=[], options=job.options, environment_version="8",
        proto_pipeline_staged_url="gs://demo-bucket/staging/pipeline.pb",
        proto_pipeline=job.proto_pipeline).proto
    return job.json()


def unpacked_payloads(pipeline: beam_runner_api_pb2.Pipeline) -> bytes:
    """Every pickled blob in the pipeline proto, base64-decoded and decompressed.

    Beam stores pickled DoFns, coders and configs as base64 of a bz2- or zlib-compressed pickle,
    so a key inside one would not show in the raw bytes; this is what must be searched.
    """
    raw = pipeline.SerializeToString()
    found = []
    for blob in re.findall(rb"[A-Za-z0-9+/]{40,}={0,2}", raw):
        try:
            packed = base64.b64decode(blob, validate=True)
        except ValueError:
            continue
        for decompress in (bz2.decompress, zlib.decompress):
            try:
                found.append(decompress(packed))
                break
            except (OSError, ValueError, zlib.error):
                continue
    return b"\n".join(found)


def transforms_named(pipeline: beam_runner_api_pb2.Pipeline, name: str) -> list[Any]:
    return [t for t in pipeline.components.transforms.values() if t.unique_name == name]


def subtransform_urns(pipeline: beam_runner_api_pb2.Pipeline, transform: Any) -> set[str]:
    urns = {transform.spec.urn}
    for child in transform.subtransforms:
        urns |= subtransform_urns(pipeline, pipeline.components.transforms[child])
    return urns


def test_the_run_command_translates_for_dataflow_without_the_key(photos: Path, tmp_path: Path,
                                                                  loopback_only,
                                                                  secret_manager) -> None:
    code = run_cli("run", "--input", str(photos / "*.jpg"), "--output", str(tmp_path / "out"),
                   "--api-key-secret", SECRET, "--prompt", PROMPT, *DRY_RUN)
    assert code == 0  # the launcher returned after submitting; it did not wait for the job
    # The launcher read the secret once to check it, before building the job.
    assert secret_manager.requests == [({"name": SECRET}, 30.0)]
    [job] = CapturingDataflowRunner.jobs
    pipeline = job.proto_pipeline
    for step in ("ExpandInputs", "PrepareImages", "CaptionImages", "WriteCaptions"):
        assert transforms_named(pipeline, step), step

    # Serialized options: what the Dataflow console shows. No key; our project is there.
    text = job_json(job)
    options = json.loads(text)["environment"]["sdkPipelineOptions"]["options"]
    assert options["project"] == "demo-project" and options["max_num_workers"] == 3
    assert SENTINEL not in text

    # Pickled functions: the config names the secret and carries the prompt, never the key.
    payloads = unpacked_payloads(pipeline)
    assert PROMPT.encode() in payloads and SECRET.encode() in payloads  # the search works
    key_is_nowhere(job)
    assert loopback_only == []


def test_a_remote_run_without_a_secret_does_not_launch(photos: Path, tmp_path: Path,
                                                      loopback_only, secret_manager,
                                                      capsys) -> None:
    # OPENAI_API_KEY is set here, and --api-key-env/--api-key-file would be readable too: none
    # of them reaches Dataflow workers.
    key_file = tmp_path / "key"
    key_file.write_text(SENTINEL)
    for flags in ([], ["--api-key-file", str(key_file)], ["--api-key-env", "OPENAI_API_KEY"]):
        code = run_cli("run", "--input", str(photos / "*.jpg"), "--output",
                       str(tmp_path / "out"), *flags, *DRY_RUN)
        assert code == 2 and CapturingDataflowRunner.jobs == []
        [line] = capsys.readouterr().err.strip().splitlines()
        assert "--api-key-secret" in line and "https://api.openai.com/v1" in line
        assert SENTINEL not in line
    assert secret_manager.requests == []


@pytest.mark.parametrize(("error", "fragment"), [
    (gexc.PermissionDenied("Permission 'secretmanager.versions.access' denied"),
     "roles/secretmanager.secretAccessor"),
    (gexc.NotFound("Secret Version [projects/1/secrets/openai-api-key/versions/7] not found"),
     "not found"),
])
def test_a_secret_the_launcher_cannot_read_stops_the_launch(photos: Path, tmp_path: Path,
                                                            loopback_only, secret_manager,
                                                            capsys, error: Exception,
                                                            fragment: str) -> None:
    secret_manager.error = error
    code = run_cli("run", "--input", str(photos / "*.jpg"), "--output", str(tmp_path / "out"),
                   "--api-key-secret", SECRET, *DRY_RUN)
    assert code == 2 and CapturingDataflowRunner.jobs == []
    [line] = capsys.readouterr().err.strip().splitlines()
    assert fragment in line and SECRET in line and SECRET_VALUE not in line
    assert len(secret_manager.requests) == 1  # a permanent error is not retried
    assert loopback_only == []


def test_the_grouping_after_input_expansion_breaks_fusion(photos: Path, tmp_path: Path,
                                                         loopback_only, secret_manager) -> None:
    assert run_cli("run", "--input", str(photos / "*.jpg"), "--output", str(tmp_path / "out"),
                   "--api-key-secret", SECRET, *DRY_RUN) == 0
    pipeline = CapturingDataflowRunner.jobs[-1].proto_pipeline
    # SortLibrary groups each file with its neighbours (sidecars, a Live Photo's motion part) in
    # a GroupByKey: that is what makes Dataflow materialize and redistribute the images, so
    # ExpandInputs adds no Reshuffle of its own (one shuffle of every image, not two).
    [expand] = transforms_named(pipeline, "ExpandInputs")
    assert transforms_named(pipeline, "ExpandInputs/Reshuffle") == []
    [library] = transforms_named(pipeline, "SortLibrary")
    assert set(library.inputs.values()) == set(expand.outputs.values())
    assert "beam:transform:group_by_key:v1" in subtransform_urns(pipeline, library)
    [prepare] = transforms_named(pipeline, "PrepareImages")
    assert set(prepare.inputs.values()) <= set(library.outputs.values())
    assert loopback_only == []


def test_the_flex_template_entry_point_builds_the_job(photos: Path, tmp_path: Path,
                                                      loopback_only, secret_manager,
                                                      monkeypatch) -> None:
    """templates/launch.py as the launcher runs it: underscore parameters, true/false booleans,
    the setup file from FLEX_TEMPLATE_PYTHON_SETUP_FILE, and this image's URI in the env."""
    monkeypatch.setenv(template.IMAGE_ENV, IMAGE)
    monkeypatch.setattr(sys, "argv", [
        "launch.py", f"--input={photos}/*.jpg", f"--output={tmp_path}/out",
        f"--api_key_secret={SECRET}", "--max_side=256", "--dedupe=false", "--overwrite=true",
        # Staging this (missing) file would fail the build: it must be dropped, since the
        # workers run the launcher's own image.
        f"--setup_file={tmp_path}/no-such/setup.py",
        *[arg for arg in DRY_RUN if not arg.startswith("--runner")],
        f"--runner={__name__}.CapturingDataflowRunner"])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(ROOT / "templates" / "launch.py"), run_name="__main__")
    assert done.value.code == 0
    [job] = CapturingDataflowRunner.jobs
    options = json.loads(job_json(job))["environment"]["sdkPipelineOptions"]["options"]
    assert options["sdk_container_image"] == IMAGE and "setup_file" not in options
    images = {beam_runner_api_pb2.DockerPayload.FromString(env.payload).container_image
              for env in job.proto_pipeline.components.environments.values()}
    assert images == {IMAGE}
    assert len(secret_manager.requests) == 1
    key_is_nowhere(job)
    assert loopback_only == []


def test_the_paid_calls_are_checkpointed_before_the_writes(photos: Path, tmp_path: Path,
                                                           loopback_only, secret_manager) -> None:
    # Dataflow fuses steps and retries a failed bundle whole: without a checkpoint, a failed
    # Parquet write would call the model again for every image of the bundle.
    assert run_cli("run", "--input", str(photos / "*.jpg"), "--output", str(tmp_path / "out"),
                   "--api-key-secret", SECRET, *DRY_RUN) == 0
    pipeline = CapturingDataflowRunner.jobs[-1].proto_pipeline
    [checkpoint] = transforms_named(pipeline, "CaptionImages/CheckpointCaptions")
    assert "beam:transform:group_by_key:v1" in subtransform_urns(pipeline, checkpoint)
    [caption] = transforms_named(pipeline, "CaptionImages/Caption")
    assert set(caption.outputs.values()) & set(checkpoint.inputs.values())
    # The checkpointed rows are what the Parquet write reads (no Flatten between: one branch).
    [write] = transforms_named(pipeline, "WriteCaptions/WriteCaptionsParquet")
    assert set(write.inputs.values()) == set(checkpoint.outputs.values())


def test_a_spend_cap_needs_a_known_number_of_worker_processes(photos: Path, tmp_path: Path,
                                                               loopback_only, secret_manager,
                                                               capsys) -> None:
    unbounded = ["--api-key-secret", SECRET,
                 *[flag for flag in DRY_RUN if not flag.startswith("--max_num_workers")]]
    code = run_cli("run", "--input", str(photos / "*.jpg"), "--output", str(tmp_path / "out"),
                   "--max-cost-usd", "50", *unbounded)
    assert code == 2 and CapturingDataflowRunner.jobs == []
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "--max_num_workers" in line and "--workers-hint" in line
    # Either names the count: 3 workers x 4 vCPUs = 12 processes, or the hint.
    for extra in (["--max_num_workers=3"], ["--workers-hint", "12"]):
        assert run_cli("run", "--input", str(photos / "*.jpg"), "--output",
                       str(tmp_path / f"out{len(extra)}"), "--max-cost-usd", "50",
                       *unbounded, *extra) == 0


# A schema only the gs:// file has: its property names must reach the job's pickled config.
GCS_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["shelf_label_7f3a"],
              "properties": {"shelf_label_7f3a": {"type": "string"}}}


@pytest.fixture
def gcs_emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The GCS emulator (tests/fixtures/gcs_emulator.py) with its environment set; yields a
    storage client on it, with the emulator server as `.server` (to fill buckets fast)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    with emulator(tmp_path) as (server, env):
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        client = storage.Client(project="test", credentials=AnonymousCredentials())
        client.server = server
        yield client


def test_the_launcher_reads_a_gs_schema(photos: Path, tmp_path: Path, gcs_emulator,
                                        loopback_only, secret_manager, capsys) -> None:
    """A template's launcher has no local files of the user's: --schema gs://... is read through
    Beam FileSystems, and the job carries the schema it found there."""
    bucket = gcs_emulator.create_bucket("schemas")
    bucket.blob("v1/shelf.json").upload_from_string(json.dumps(GCS_SCHEMA))
    code = run_cli("run", "--input", str(photos / "*.jpg"), "--output", str(tmp_path / "out"),
                   "--api-key-secret", SECRET, "--schema", "gs://schemas/v1/shelf.json",
                   *DRY_RUN)
    assert code == 0
    [job] = CapturingDataflowRunner.jobs
    assert b"shelf_label_7f3a" in unpacked_payloads(job.proto_pipeline)
    capsys.readouterr()
    code = run_cli("run", "--input", str(photos / "*.jpg"), "--output", str(tmp_path / "out2"),
                   "--api-key-secret", SECRET, "--schema", "gs://schemas/v1/missing.json",
                   *DRY_RUN)
    [line] = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "gs://schemas/v1/missing.json" in line and "neither a file" in line
    assert len(CapturingDataflowRunner.jobs) == 1
    assert loopback_only == []


def test_a_glob_over_a_bucket_lists_on_many_workers(tmp_path: Path, gcs_emulator, loopback_only,
                                                     secret_manager) -> None:
    # 2,000 objects under 40 prefixes: the job splits the listing at the pattern's root and
    # spreads the prefixes over workers (a GroupByKey between the split and the listing).
    fill_bucket(gcs_emulator.server, "archive",
                (f"photos/p{i % 40:02d}/img{i:05d}.jpg" for i in range(2_000)))
    assert run_cli("run", "--input", "gs://archive/photos/**/*.jpg", "--output",
                   str(tmp_path / "out"), "--api-key-secret", SECRET, *DRY_RUN) == 0
    pipeline = CapturingDataflowRunner.jobs[-1].proto_pipeline
    [split] = transforms_named(pipeline, "ExpandInputs/SplitListing")
    [spread] = transforms_named(pipeline, "ExpandInputs/SpreadFolders")
    [listing] = transforms_named(pipeline, "ExpandInputs/ListFolders")
    assert "beam:transform:group_by_key:v1" in subtransform_urns(pipeline, spread)
    assert set(spread.inputs.values()) & set(split.outputs.values())
    assert set(listing.inputs.values()) == set(spread.outputs.values())
    assert not transforms_named(pipeline, "ExpandInputs/MatchFiles"), "no single-worker match"
    assert loopback_only == []
