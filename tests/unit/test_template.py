"""The Flex Template: metadata.json in step with the run options, valid for the Dataflow API, every
parameter a working `run` flag; the launcher's argument translation; the Dockerfile's versions."""

from __future__ import annotations

import json
import re
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
IMAGE = "us-central1-docker.pkg.dev/demo/repo/beam-caption:1"
# A value of the right shape for the parameters whose regex is about locations.
SAMPLES = {"input": "gs://photos/**/*.jpg", "output": "gs://captions/run1",
           "manifest": "gs://photos/list.csv", "incremental": "gs://captions/run0",
           "base_url": "https://gateway.example/v1",
           "api_key_secret": "projects/p/secrets/openai/versions/3"}
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


def _dockerfile_args() -> dict[str, str]:
    text = DOCKERFILE.read_text(encoding="utf-8")
    return dict(re.findall(r"^ARG (\w+)=(\S*)$", text, flags=re.MULTILINE))


def test_dockerfile_matches_the_tested_beam_and_python() -> None:
    args = _dockerfile_args()
    # The worker boot program comes from the Beam SDK image: its version must be the SDK's.
    assert args["BEAM_VERSION"] == apache_beam.__version__
    text = DOCKERFILE.read_text(encoding="utf-8")
    launcher = re.search(r"python(\d)(\d+)-template-launcher-base", text)
    assert launcher and f"{launcher.group(1)}.{launcher.group(2)}" == args["PYTHON_VERSION"]
    requires = re.search(r'requires-python = ">=(\d+\.\d+)"',
                         (ROOT / "pyproject.toml").read_text()).group(1)
    assert tuple(map(int, args["PYTHON_VERSION"].split("."))) >= tuple(
        map(int, requires.split(".")))


def test_dockerfile_entry_points_exist_and_are_in_the_build_context() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    env = dict(re.findall(r"^ENV (FLEX_TEMPLATE_PYTHON_\w+)=(\S+)$", text, flags=re.MULTILINE))
    assert set(env) == {"FLEX_TEMPLATE_PYTHON_PY_FILE", "FLEX_TEMPLATE_PYTHON_SETUP_FILE"}
    for path in env.values():  # /template in the image is the repository root
        assert (ROOT / path.removeprefix("/template/")).is_file(), path
    assert 'ENTRYPOINT ["/opt/apache/beam/boot"]' in text
    assert f"ENV {template.IMAGE_ENV}=" in text
    sources = [src for line in re.findall(r"^COPY (?!--from)(.+)$", text, flags=re.MULTILINE)
               for src in line.split()[:-1]]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    context = re.search(r"tar -c --exclude=__pycache__ ([^|]+)\|", makefile).group(1).split()
    for src in sources:
        assert (ROOT / src).exists() and src.rstrip("/") in context, src


def test_the_readme_names_only_real_parameters_and_exclusions() -> None:
    readme = (ROOT / "templates" / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Parameters", 1)[1]
    named = re.findall(r"^\| `(\w+)` \|", section, flags=re.MULTILINE)
    assert len(named) >= 5
    assert set(named) <= {p["name"] for p in parameters()}
    for flag in template.NOT_TEMPLATE_PARAMETERS:
        assert f"`{flag[2:].replace('-', '_')}`" in section, flag
