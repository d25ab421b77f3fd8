"""The Flex Template: metadata.json in step with the run options, valid for the Dataflow API, every
parameter a working `run` flag and only schemes the image reads; the launcher's argument
translation; the image: `make template-build` run with fake docker and gcloud (what it builds,
pushes and pins), and the image's file layout assembled from the Dockerfile and the build context
that run created, without docker."""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apache_beam
import pytest
from google.cloud.dataflow_v1beta3.types import TemplateMetadata

from beam_caption.cli import build_parser
from beam_caption.cli import main as cli_main
from beam_caption.dataflow import template
from beam_caption.errors import ConfigError
from beam_caption.options import RUN_OPTIONS

ROOT = Path(__file__).resolve().parents[2]
METADATA = ROOT / "templates" / "metadata.json"
DOCKERFILE = ROOT / "templates" / "Dockerfile"
IMAGE = "us-central1-docker.pkg.dev/demo/repo/beam-caption@sha256:" + "a1" * 32
# A value of the right shape for the parameters whose regex is about locations.
SAMPLES = {"input": "gs://photos/**/*.jpg", "output": "gs://captions/run1",
           "manifest": "gs://photos/list.csv", "incremental": "gs://captions/run0",
           "base_url": "https://gateway.example/v1",
           "api_key_secret": "projects/p/secrets/openai/versions/3",
           "schema": "gs://schemas/products.json"}
REQUIRED = ["--input=gs://photos/*.jpg", "--output=gs://captions/run1"]


def parameters() -> list[dict[str, Any]]:
    return json.loads(METADATA.read_text(encoding="utf-8"))["parameters"]


def parse_run(argv: list[str]) -> tuple[Any, list[str]]:
    """Parse `run ARGV` with the real CLI parser; returns (namespace, pass-through flags)."""
    return build_parser().parse_known_args(["run", *argv])


def sample_value(param: dict[str, Any]) -> str:
    if param["name"] in SAMPLES:
        return SAMPLES[param["name"]]
    return {"NUMBER": "1", "BOOLEAN": "true", "ENUM": param.get("enumOptions", [{}])[-1].get(
        "value", ""), "TEXT": "some text, with a comma"}.get(param["paramType"], "x")


def test_metadata_json_is_generated_from_the_options() -> None:
    assert METADATA.read_text(encoding="utf-8") == template.render_metadata(), (
        "templates/metadata.json is out of date: run "
        "`beam-caption template-metadata --output templates/metadata.json`")


def test_metadata_parses_as_the_dataflow_api_message() -> None:
    text = METADATA.read_text(encoding="utf-8")
    # Strict: an unknown field or enum value (a typo the service would reject) raises here.
    message = TemplateMetadata.from_json(text, ignore_unknown_fields=False)
    assert message.name == "beam-caption" and message.description
    names = [p.name for p in message.parameters]
    assert len(names) == len(set(names)) == len(parameters())
    for param in message.parameters:  # what `gcloud dataflow flex-template build` insists on
        assert param.name and param.label and param.help_text, param
        assert re.fullmatch(r"[a-z][a-z0-9_]*", param.name), param.name
        for regex in param.regexes:
            re.compile(regex)


def test_every_run_option_is_a_parameter_unless_excluded_with_a_reason() -> None:
    flags = {opt.flag for opt in RUN_OPTIONS}
    assert set(template.NOT_TEMPLATE_PARAMETERS) <= flags, "an exclusion names a removed flag"
    offered = {p["name"] for p in parameters()}
    for opt in RUN_OPTIONS:
        excluded = opt.flag in template.NOT_TEMPLATE_PARAMETERS
        assert (opt.dest in offered) != excluded, opt.flag
        if opt.required:
            assert opt.dest in offered, f"required {opt.flag} must be a template parameter"
            assert next(p for p in parameters() if p["name"] == opt.dest)["isOptional"] is False


@pytest.mark.parametrize("param", parameters(), ids=lambda p: p["name"])
def test_every_parameter_is_a_valid_run_option(param: dict[str, Any]) -> None:
    value = sample_value(param)
    for regex in param.get("regexes", []):
        assert re.fullmatch(regex, value), (regex, value)
    if "defaultValue" in param:
        for regex in param.get("regexes", []):
            assert re.fullmatch(regex, param["defaultValue"]), (regex, param["defaultValue"])
    argv = template.launcher_argv([*REQUIRED, f"--{param['name']}={value}"])
    args, extra = parse_run(argv)
    assert extra == ["--runner=DataflowRunner"], extra  # nothing unrecognised
    opt = next(o for o in RUN_OPTIONS if o.dest == param["name"])
    got = getattr(args, opt.dest)
    if param["paramType"] == "BOOLEAN":
        expected: Any = True
    else:
        expected = value if opt.type is str else opt.type(value)
    if opt.action == "append":
        got = got[-1]
    assert got == expected


def test_parameter_defaults_and_choices_follow_the_options() -> None:
    by_name = {p["name"]: p for p in parameters()}
    for opt in template.template_options():
        param = by_name[opt.dest]
        if opt.choices:
            assert [e["value"] for e in param["enumOptions"]] == list(opt.choices)
        if opt.default is not None and opt.action != "append":
            args, _ = parse_run([*REQUIRED])
            want = getattr(args, opt.dest)
            if param["paramType"] == "BOOLEAN":
                assert param["defaultValue"] == str(want).lower()
            else:
                assert opt.type(param["defaultValue"]) == want, opt.flag


@pytest.mark.parametrize(("given", "expected"), [
    (["--max_side=256"], ["--max-side=256"]),
    (["--max-side=256"], ["--max-side=256"]),
    (["--overwrite=true"], ["--overwrite"]),
    (["--overwrite=false"], []),
    (["--dedupe=false"], ["--no-dedupe"]),
    (["--dedupe=True"], ["--dedupe"]),
    (["--prompt=Describe it, briefly."], ["--prompt=Describe it, briefly."]),
    (["--project=p", "--temp_location=gs://b/t"], ["--project=p", "--temp_location=gs://b/t"]),
])
def test_launcher_translates_template_parameters(given: list[str], expected: list[str]) -> None:
    assert template.launcher_argv(given) == [*expected, "--runner=DataflowRunner"]


def test_launcher_rejects_a_boolean_that_is_not_true_or_false() -> None:
    with pytest.raises(ConfigError, match="dedupe must be true or false"):
        template.launcher_argv(["--dedupe=maybe"])


def test_launcher_keeps_a_runner_that_was_given() -> None:
    assert template.launcher_argv(["--runner=DirectRunner"]) == ["--runner=DirectRunner"]


def test_workers_run_the_launcher_image_without_staging_the_package() -> None:
    argv = template.launcher_argv(["--setup_file=/template/setup.py", "--project=p"], IMAGE)
    assert argv == ["--project=p", "--runner=DataflowRunner", f"--sdk_container_image={IMAGE}"]


def test_another_worker_image_keeps_the_setup_file() -> None:
    other = "apache/beam_python3.11_sdk:2.77.0"
    argv = template.launcher_argv(
        ["--setup_file=/template/setup.py", f"--sdk_container_image={other}"], IMAGE)
    assert "--setup_file=/template/setup.py" in argv
    assert f"--sdk_container_image={IMAGE}" not in argv


def test_template_metadata_command_writes_and_checks(tmp_path: Path, capsys) -> None:
    target = tmp_path / "metadata.json"
    assert cli_main(["template-metadata", "--output", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == METADATA.read_text(encoding="utf-8")
    assert cli_main(["template-metadata", "--check", str(target)]) == 0
    target.write_text(target.read_text().replace("Max side", "Longest side"))
    assert cli_main(["template-metadata", "--check", str(target)]) == 1
    err = capsys.readouterr().err
    assert "out of date" in err and "template-metadata --output" in err


def test_the_launcher_refuses_a_worker_image_that_is_not_pinned() -> None:
    for movable in ("us-central1-docker.pkg.dev/demo/repo/beam-caption:1",
                    "us-central1-docker.pkg.dev/demo/repo/beam-caption",
                    "us-central1-docker.pkg.dev/demo/repo/beam-caption@sha256:abc"):
        with pytest.raises(ConfigError, match="not pinned by digest"):
            template.launcher_argv(["--project=p"], movable)


def test_the_launch_entry_point_turns_an_unpinned_image_into_one_line(monkeypatch, capsys) -> None:
    from beam_caption.cli.template import launch

    monkeypatch.setenv(template.IMAGE_ENV, "us-central1-docker.pkg.dev/demo/repo/beam-caption:1")
    assert launch(["--input=gs://photos/*.jpg", "--output=gs://captions/run1"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "not pinned by digest" in line and "make template-build" in line


@pytest.mark.parametrize(("name", "value"), [
    ("input", "s3://photos/**/*.jpg"), ("input", "/photos/*.jpg"), ("input", "file:///p/a.jpg"),
    ("manifest", "s3://photos/list.csv"), ("manifest", "https://example.com/list.csv"),
    ("manifest", "list.csv"), ("schema", "schemas/products.json"), ("schema", "s3://b/s.json"),
])
def test_the_template_offers_only_schemes_its_image_can_read(name: str, value: str) -> None:
    [param] = [p for p in parameters() if p["name"] == name]
    assert not any(re.fullmatch(regex, value) for regex in param["regexes"]), (name, value)
    assert "s3://" not in param["helpText"] or "no s3://" in param["helpText"]


@pytest.mark.parametrize("value", ["gs://photos/**/*.jpg", "https://cdn.example/a.jpg"])
def test_the_template_input_takes_gcs_globs_and_urls(value: str) -> None:
    [param] = [p for p in parameters() if p["name"] == "input"]
    assert re.fullmatch(param["regexes"][0], value)


def test_every_built_in_schema_name_is_a_valid_template_value() -> None:
    from beam_caption.api.structured import BUILT_IN

    [param] = [p for p in parameters() if p["name"] == "schema"]
    for name in BUILT_IN:
        assert re.fullmatch(param["regexes"][0], name), name


# -- the image: `make template-build` with fake docker and gcloud --------------------------------

FAKE_REPOSITORY = "us-central1-docker.pkg.dev/demo-project/beam-caption/beam-caption"
# docker and gcloud for `make template-build`: each call is logged as a JSON line; `docker build`
# keeps a copy of its build context (make deletes its own); `docker inspect` answers the digests a
# registry would, with another repository's digest first (the recipe must pick its own).
FAKE_TOOL = """#!{python}
import hashlib, json, os, shutil, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a", encoding="utf-8") as log:
    log.write(json.dumps([os.path.basename(sys.argv[0]), *args]) + "\\n")
if sys.argv[0].endswith("docker") and args[0] == "build":
    kept = os.environ["FAKE_CONTEXTS"]
    shutil.copytree(args[-1], os.path.join(kept, str(len(os.listdir(kept)))))
if sys.argv[0].endswith("docker") and args[0] == "inspect":
    ref = args[-1]
    print("mirror.example/other/beam-caption@sha256:" + "0" * 64)
    print(ref.rsplit(":", 1)[0] + "@sha256:" + hashlib.sha256(ref.encode()).hexdigest())
"""


def _fake_digest(ref: str) -> str:
    return ref.rsplit(":", 1)[0] + "@sha256:" + hashlib.sha256(ref.encode()).hexdigest()


@pytest.fixture(scope="module")
def template_build(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`make template-build` as a user runs it, with docker and gcloud replaced by fakes."""
    work = tmp_path_factory.mktemp("template-build")
    bin_dir, contexts = work / "bin", work / "contexts"
    bin_dir.mkdir()
    contexts.mkdir()
    for tool in ("docker", "gcloud"):
        (bin_dir / tool).write_text(FAKE_TOOL.format(python=sys.executable))
        (bin_dir / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "FAKE_LOG": str(work / "calls.jsonl"), "FAKE_CONTEXTS": str(contexts),
           "NO_GCE_CHECK": "true"}
    env.pop("TAG", None)
    # -o: the venv is installed already; make must not rebuild it.
    done = subprocess.run(
        ["make", "--no-print-directory", "-o", ".venv/.installed", "template-build",
         "PROJECT=demo-project", "REGION=us-central1", "BUCKET=demo-bucket",
         f"IMAGE={FAKE_REPOSITORY}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    calls = [json.loads(line) for line in (work / "calls.jsonl").read_text().splitlines()]
    return {"calls": calls, "contexts": sorted(contexts.iterdir(), key=lambda p: int(p.name)),
            "stdout": done.stdout}


def _option(call: list[str], name: str) -> str:
    """The value of `name VALUE` or `name=VALUE` in a logged command line."""
    for i, arg in enumerate(call):
        if arg == name:
            return call[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{name} not in {call}")


def test_template_build_pushes_unique_tags_and_pins_the_spec_by_digest(template_build) -> None:
    calls = template_build["calls"]
    docker = [c[1:] for c in calls if c[0] == "docker"]
    assert [c[0] for c in docker] == ["build", "push", "inspect", "build", "push", "inspect"]
    worker_tag = _option(docker[0], "-t")
    repository, _, tag = worker_tag.rpartition(":")
    assert repository == FAKE_REPOSITORY
    assert re.fullmatch(r"\d{8}-\d{6}-([0-9a-f]{4,}|local)", tag), tag  # never reused
    assert docker[1] == ["push", worker_tag] and docker[2][-1] == worker_tag
    worker = _fake_digest(worker_tag)
    # Step 2 builds the launcher from the worker image the registry pinned, not from a tag.
    assert _option(docker[3], "--target") == "launcher"
    assert _option(docker[3], "--build-arg") == f"WORKER_IMAGE={worker}"
    launcher_tag = _option(docker[3], "-t")
    assert launcher_tag == f"{worker_tag}-launcher" and docker[4] == ["push", launcher_tag]
    for build in (docker[0], docker[3]):  # Dataflow's VMs are x86-64
        assert _option(build, "--platform") == "linux/amd64"
        assert _option(build, "-f").endswith("/templates/Dockerfile")
    [gcloud] = [c[1:] for c in calls if c[0] == "gcloud"]
    assert gcloud[:4] == ["dataflow", "flex-template", "build",
                          "gs://demo-bucket/templates/beam-caption.json"]
    spec_image = _option(gcloud, "--image")
    assert spec_image == _fake_digest(launcher_tag) and template.is_pinned_image(spec_image)
    assert _option(gcloud, "--metadata-file") == "templates/metadata.json"
    assert f"WORKER_IMAGE={worker}" in template_build["stdout"]
    assert not any(":latest" in arg for call in calls for arg in call)


def test_template_build_refuses_an_image_with_a_tag() -> None:
    done = subprocess.run(
        ["make", "--no-print-directory", "-o", ".venv/.installed", "template-build",
         "PROJECT=p", "REGION=r", "BUCKET=b", f"IMAGE={FAKE_REPOSITORY}:latest"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0 and "IMAGE must be a path without a tag" in done.stderr


# -- the image's layout, assembled from templates/Dockerfile without docker ----------------------

@dataclass
class Stage:
    """One FROM ... [AS name] of a Dockerfile, with what it sets."""

    base: str
    name: str | None
    args: dict[str, str]
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    copies: list[tuple[str | None, list[str], str]] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    entrypoint: list[str] | None = None


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) per logical line: continuations joined, comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    found = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def _expand(value: str, names: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: names.get(m.group(1) or m.group(2), ""),
                  value)


def parse_dockerfile(text: str, build_args: dict[str, str] | None = None) -> list[Stage]:
    """The stages of a Dockerfile, ARG/ENV substituted as a builder would."""
    build_args = build_args or {}
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for word, rest in _instructions(text):
        stage = stages[-1] if stages else None
        if word == "ARG":
            name, _, default = rest.partition("=")
            scope = stage.args if stage else global_args
            scope[name] = build_args.get(name, default or global_args.get(name, ""))
        elif word == "FROM":
            parts = _expand(rest, global_args).split()
            stages.append(Stage(parts[0], parts[2] if len(parts) > 2 else None, {}))
        elif word == "ENV":
            name, _, value = rest.partition("=")
            stage.env[name] = _expand(value, {**stage.args, **stage.env})
        elif word == "WORKDIR":
            stage.workdir = posixpath.join(stage.workdir, rest)
        elif word == "COPY":
            parts = rest.split()
            source_stage = parts.pop(0).split("=", 1)[1] if parts[0].startswith("--from=") else None
            stage.copies.append((source_stage, parts[:-1],
                                 posixpath.join(stage.workdir, parts[-1])))
        elif word == "RUN":
            stage.runs.append(rest)
        elif word == "ENTRYPOINT":
            stage.entrypoint = json.loads(rest)
    return stages


def assemble(stage: Stage, context: Path, root: Path) -> None:
    """Put under `root` what the stage's COPY lines would take from the build context."""
    for source_stage, sources, dest in stage.copies:
        if source_stage is not None:
            continue
        for source in sources:
            origin = context / source
            assert origin.exists(), f"COPY {source}: not in the build context"
            target = root / dest.lstrip("/")
            if origin.is_dir():  # Docker copies a directory's contents
                shutil.copytree(origin, target, dirs_exist_ok=True)
            else:
                if dest.endswith("/") or len(sources) > 1:
                    target = target / origin.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target)


def _by_name(stages: list[Stage]) -> dict[str | None, Stage]:
    return {stage.name: stage for stage in stages}


def test_dockerfile_matches_the_tested_beam_and_python() -> None:
    stages = _by_name(parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8")))
    worker = stages["worker"]
    python = ".".join(map(str, sys.version_info[:2]))
    # Beam's SDK image is the base: its boot program and apache-beam must be the venv's version.
    assert worker.base == f"apache/beam_python{python}_sdk:{apache_beam.__version__}"
    launcher_image = stages["template_launcher"].base
    name, _, tag = launcher_image.rpartition(":")
    assert name == "gcr.io/dataflow-templates-base/" \
        f"python{python.replace('.', '')}-template-launcher-base"
    assert tag and tag != "latest", "pin the launcher base image to a dated tag"
    requires = re.search(r'requires-python = ">=(\d+\.\d+)"',
                         (ROOT / "pyproject.toml").read_text()).group(1)
    assert sys.version_info[:2] >= tuple(map(int, requires.split(".")))


def test_the_image_layout_from_the_build_context_make_creates(template_build, tmp_path) -> None:
    context = template_build["contexts"][0]  # what step 1's `docker build` was given
    dockerfile = (context / "templates" / "Dockerfile").read_text(encoding="utf-8")
    assert dockerfile == DOCKERFILE.read_text(encoding="utf-8")
    stages = parse_dockerfile(dockerfile)
    worker = stages[-1]  # the default target
    assert worker.name == "worker"
    root = tmp_path / "image"
    assemble(worker, context, root)
    # Only what the image needs: no caches, no virtualenv, no local keys.
    assert not any(path.name == "__pycache__" for path in root.rglob("*"))
    assert sorted(p.name for p in (root / "template").iterdir()) == [
        "README.md", "beam_caption", "pyproject.toml", "setup.py", "templates"]

    # The launcher binary comes from Google's launcher image, to the path Dataflow runs.
    binary = "/opt/google/dataflow/python_template_launcher"
    [(source_stage, sources, dest)] = [c for c in worker.copies if c[0] is not None]
    assert sources == [binary] and dest == binary
    assert _by_name(stages)[source_stage].base.startswith(
        "gcr.io/dataflow-templates-base/python311-template-launcher-base:")
    assert worker.entrypoint == ["/opt/apache/beam/boot"]  # a valid --sdk_container_image

    py_file = worker.env["FLEX_TEMPLATE_PYTHON_PY_FILE"]
    setup_file = worker.env["FLEX_TEMPLATE_PYTHON_SETUP_FILE"]
    for path in (py_file, setup_file):
        assert (root / path.lstrip("/")).is_file(), path
    compiled = subprocess.run([sys.executable, "-m", "py_compile", str(root / py_file.lstrip("/"))],
                              capture_output=True, text=True, check=False)
    assert compiled.returncode == 0, compiled.stderr
    # `pip install .` in WORKDIR needs the project and everything pyproject.toml names.
    project = root / worker.workdir.lstrip("/")
    assert (project / "beam_caption" / "__init__.py").is_file()
    readme = re.search(r'^readme = "([^"]+)"', (project / "pyproject.toml").read_text(),
                       flags=re.MULTILINE).group(1)
    assert (project / readme).is_file()
    [install] = worker.runs
    assert '-c /template/constraints.txt ".[secrets]"' in install
    assert "/tmp/base_image_requirements.txt" in install and "pip check" in install


def test_the_launcher_stage_is_the_pinned_worker_image_and_passes_it_on(template_build) -> None:
    [_, step2] = [c[1:] for c in template_build["calls"] if c[:2] == ["docker", "build"]]
    worker = _option(step2, "--build-arg").split("=", 1)[1]
    context = template_build["contexts"][1]
    stages = _by_name(parse_dockerfile((context / "templates" / "Dockerfile").read_text(),
                                       {"WORKER_IMAGE": worker}))
    launcher = stages["launcher"]
    # Nothing but the pointer: the launcher's files are exactly the workers'.
    assert launcher.base == worker and launcher.copies == [] and launcher.runs == []
    assert launcher.env == {template.IMAGE_ENV: worker}
    argv = template.launcher_argv(["--setup_file=/template/setup.py"],
                                  launcher.env[template.IMAGE_ENV])
    assert argv == ["--runner=DataflowRunner", f"--sdk_container_image={worker}"]


def test_the_dockerignore_lets_every_copy_source_through() -> None:
    # For a `docker build -f templates/Dockerfile .` from the repository root.
    allowed = {line[1:].rstrip("/") for line in
               (ROOT / "templates" / "Dockerfile.dockerignore").read_text().splitlines()
               if line.startswith("!")}
    worker = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))[-1]
    for source_stage, sources, _ in worker.copies:
        if source_stage is None:
            assert set(sources) <= allowed, sources

def test_the_readme_names_only_real_parameters_and_exclusions() -> None:
    readme = (ROOT / "templates" / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Parameters", 1)[1]
    named = re.findall(r"^\| `(\w+)` \|", section, flags=re.MULTILINE)
    assert len(named) >= 5
    assert set(named) <= {p["name"] for p in parameters()}
    for flag in template.NOT_TEMPLATE_PARAMETERS:
        assert f"`{flag[2:].replace('-', '_')}`" in section, flag
