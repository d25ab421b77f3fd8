"""The job Dataflow would receive, built offline: Beam's DataflowRunner with --dry_run translates
the real `run` command (and the Flex Template entry point) without submitting anything.

Proves: the pipeline translates for Dataflow; neither the serialized options nor any pickled
function carries the API key; the Reshuffle after input expansion (the fusion break) is in the
graph; nothing connects beyond loopback.
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
from pathlib import Path
from typing import Any, ClassVar

import pytest
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner
from apache_beam.runners.dataflow.internal import apiclient

from beam_caption.dataflow import template
from tests.fixtures.photos import make_small_photos
from tests.integration.pipeline_helpers import run_cli

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SENTINEL = "sk-sentinel-" + "5eC2e7" * 6
SECRET = "projects/demo-project/secrets/openai-api-key/versions/7"
PROMPT = "Name the landmark in this photo (dry-run marker 7f3a)."
IMAGE = "us-central1-docker.pkg.dev/demo-project/repo/beam-caption:dry-run"


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
                                                                  loopback_only) -> None:
    code = run_cli("run", "--input", str(photos / "*.jpg"), "--output", str(tmp_path / "out"),
                   "--api-key-secret", SECRET, "--prompt", PROMPT, *DRY_RUN)
    assert code == 0  # the launcher returned after submitting; it did not wait for the job
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
    assert SENTINEL.encode() not in payloads
    assert SENTINEL.encode() not in pipeline.SerializeToString()
    assert loopback_only == []


def test_the_reshuffle_after_input_expansion_breaks_fusion(photos: Path, tmp_path: Path,
                                                           loopback_only) -> None:
    assert run_cli("run", "--input", str(photos / "*.jpg"), "--output", str(tmp_path / "out"),
                   *DRY_RUN) == 0
    pipeline = CapturingDataflowRunner.jobs[-1].proto_pipeline
    [reshuffle] = transforms_named(pipeline, "ExpandInputs/Reshuffle")
    # A GroupByKey inside is what makes Dataflow materialize and redistribute the images.
    assert "beam:transform:group_by_key:v1" in subtransform_urns(pipeline, reshuffle)
    [expand] = transforms_named(pipeline, "ExpandInputs")
    assert set(expand.outputs.values()) == set(reshuffle.outputs.values())  # the last step
    [prepare] = transforms_named(pipeline, "PrepareImages")
    assert set(prepare.inputs.values()) == set(reshuffle.outputs.values())
    assert loopback_only == []


def test_the_flex_template_entry_point_builds_the_job(photos: Path, tmp_path: Path,
                                                      loopback_only, monkeypatch) -> None:
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
    assert loopback_only == []


def test_the_paid_calls_are_checkpointed_before_the_writes(photos: Path, tmp_path: Path,
                                                           loopback_only) -> None:
    # Dataflow fuses steps and retries a failed bundle whole: without a checkpoint, a failed
    # Parquet write would call the model again for every image of the bundle.
    assert run_cli("run", "--input", str(photos / "*.jpg"), "--output", str(tmp_path / "out"),
                   *DRY_RUN) == 0
    pipeline = CapturingDataflowRunner.jobs[-1].proto_pipeline
    [checkpoint] = transforms_named(pipeline, "CaptionImages/CheckpointCaptions")
    assert "beam:transform:group_by_key:v1" in subtransform_urns(pipeline, checkpoint)
    [caption] = transforms_named(pipeline, "CaptionImages/Caption")
    assert set(caption.outputs.values()) & set(checkpoint.inputs.values())
    [flatten] = transforms_named(pipeline, "AllCaptions")
    assert set(flatten.inputs.values()) == set(checkpoint.outputs.values())


def test_a_spend_cap_needs_a_known_number_of_worker_processes(photos: Path, tmp_path: Path,
                                                               loopback_only, capsys) -> None:
    unbounded = [flag for flag in DRY_RUN if not flag.startswith("--max_num_workers")]
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
