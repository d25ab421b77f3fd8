"""beam-caption's transforms composed into someone else's pipeline: the public API, two
CaptionImages in one pipeline, and bundles that fail once and are retried."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections import Counter, defaultdict
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

import beam_caption
from beam_caption import (
    CaptionConfig,
    CaptionImages,
    ExpandInputs,
    FetchSettings,
    PrepareImages,
    PrepareSettings,
    WriteCaptions,
)
from beam_caption.engine import registry as engine_registry
from beam_caption.simulator import running_simulator
from tests.integration.pipeline_helpers import logged_requests, read_rows, read_summary

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "samples").glob("*.jpg"))
IN_MEMORY = PipelineOptions(["--direct_running_mode=in_memory", "--direct_num_workers=1"])


@pytest.fixture()
def sim(tmp_path):
    with running_simulator(log_path=str(tmp_path / "sim.jsonl")) as handle:
        yield handle


def _sent(log: Path) -> list[tuple[str, str, int]]:
    """(prompt, sha256 of the image sent, max_completion_tokens) of every logged request."""
    sent = []
    for body in logged_requests(log):
        text, image = body["messages"][-1]["content"]
        jpeg = base64.b64decode(image["image_url"]["url"].split(",", 1)[1])
        sent.append((text["text"], hashlib.sha256(jpeg).hexdigest(),
                     body["max_completion_tokens"]))
    return sent


def test_the_public_names_are_importable_and_documented() -> None:
    for name in beam_caption.__all__:
        value = getattr(beam_caption, name)
        assert value is not None and (getattr(value, "__doc__", None) or name.isupper()), name
    with pytest.raises(AttributeError):
        _ = beam_caption.NoSuchThing


def test_two_caption_transforms_with_different_prompts_each_send_their_own(sim, tmp_path) -> None:
    # Same model and endpoint, so both share one engine per process: only the transport and the
    # pacing may be shared, never the prompt, the output cap or the money.
    one = CaptionConfig.create(prompt="PROMPT-ONE: describe it.", base_url=sim.base_url,
                               max_output_tokens=40, output=str(tmp_path / "one"))
    two = CaptionConfig.create(prompt="PROMPT-TWO: list the colours.", base_url=sim.base_url,
                               max_output_tokens=80, output=str(tmp_path / "two"))
    assert one.engine_key() == two.engine_key()
    with beam.Pipeline(runner=FnApiRunner(), options=IN_MEMORY) as p:
        prepared = (p | ExpandInputs([str(ROOT / "samples" / "*.jpg")])
                    | PrepareImages(PrepareSettings(max_side=512), FetchSettings()))
        for name, config in (("One", one), ("Two", two)):
            captioned = prepared.images | f"Caption{name}" >> CaptionImages(config)
            _ = ((captioned.captions, captioned.errors)
                 | f"Write{name}" >> WriteCaptions(str(tmp_path / name.lower()), config))

    sent = _sent(tmp_path / "sim.jsonl")
    by_prompt: dict[str, list[str]] = defaultdict(list)
    for prompt, digest, cap in sent:
        by_prompt[prompt].append(digest)
        assert cap == (40 if prompt.startswith("PROMPT-ONE") else 80), "each its own output cap"
    assert set(by_prompt) == {one.request.prompt, two.request.prompt}
    assert Counter(by_prompt[one.request.prompt]) == Counter(by_prompt[two.request.prompt])
    assert len(by_prompt[one.request.prompt]) == len(SAMPLES), "each image once per prompt"
    for config, folder in ((one, "one"), (two, "two")):
        rows = read_rows(tmp_path / folder, "captions")
        assert len(rows) == len(SAMPLES)
        assert all(r["request_key"] == config.request_key(r["image_id"]) for r in rows)
        summary = read_summary(tmp_path / folder)
        assert summary["run_id"] == config.run_id and summary["prompt"] == config.request.prompt
    total = sum(r["cost_usd"] for f in ("one", "two") for r in read_rows(tmp_path / f, "captions"))
    assert total == pytest.approx(sim.stats()["cost_usd"]["realtime"])


def test_two_caption_transforms_on_different_providers_each_pay_their_own(sim, tmp_path,
                                                                         monkeypatch) -> None:
    # One pipeline asks OpenAI's API and Anthropic's of the same photos: two engines per process
    # (the provider is part of the endpoint), two request keys per photo, each photo paid once
    # per provider, and each table's money is that provider's bill.
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-compose")
    openai = CaptionConfig.create(base_url=sim.base_url, output=str(tmp_path / "openai"))
    claude = CaptionConfig.create(provider="anthropic", model="claude-haiku-4-5",
                                  base_url=sim.root_url, output=str(tmp_path / "claude"))
    assert openai.engine_key() != claude.engine_key()
    with beam.Pipeline(runner=FnApiRunner(), options=IN_MEMORY) as p:
        prepared = (p | ExpandInputs([str(ROOT / "samples" / "*.jpg")])
                    | PrepareImages(PrepareSettings(max_side=512), FetchSettings()))
        for name, config in (("OpenAI", openai), ("Claude", claude)):
            captioned = prepared.images | f"Caption{name}" >> CaptionImages(config)
            _ = ((captioned.captions, captioned.errors)
                 | f"Write{name}" >> WriteCaptions(str(tmp_path / name.lower()), config))
    paths = Counter(json.loads(line)["path"]
                    for line in (tmp_path / "sim.jsonl").read_text().splitlines())
    assert paths["/v1/chat/completions"] == len(SAMPLES) == paths["/v1/messages"]
    tables = {}
    for config, folder in ((openai, "openai"), (claude, "claude")):
        rows = read_rows(tmp_path / folder, "captions")
        assert len(rows) == len(SAMPLES) and read_rows(tmp_path / folder, "errors") == []
        assert all(r["request_key"] == config.request_key(r["image_id"]) for r in rows)
        tables[folder] = rows
    keys = {r["request_key"] for rows in tables.values() for r in rows}
    assert len(keys) == 2 * len(SAMPLES), "another provider is another answer"
    total = sum(r["cost_usd"] for rows in tables.values() for r in rows)
    assert total == pytest.approx(sim.stats()["cost_usd"]["realtime"])
    assert sum(r["cost_usd"] for r in tables["claude"]) != pytest.approx(
        sum(r["cost_usd"] for r in tables["openai"])), "each priced as its own model"


class _FailOnce(beam.DoFn):
    """Raises on its first element, once per flag file: a write step that fails the first time."""

    def __init__(self, flag: str) -> None:
        self._flag = flag

    def process(self, row):
        flag = Path(self._flag)
        if not flag.exists():
            flag.write_text("failed once")
            raise RuntimeError("the write failed (on purpose, once)")
        yield row


def _caption_and_write(p: beam.Pipeline, config: CaptionConfig, out: Path, flag: Path, *,
                       checkpoint: bool) -> None:
    prepared = (p | ExpandInputs([str(ROOT / "samples" / "*.jpg")])
                | PrepareImages(PrepareSettings(max_side=512), FetchSettings(),
                                run_id=config.run_id))
    captioned = prepared.images | CaptionImages(config, checkpoint=checkpoint)
    captions = captioned.captions | "FailOnce" >> beam.ParDo(_FailOnce(str(flag)))
    errors = (prepared.errors, captioned.errors) | beam.Flatten()
    _ = (captions, errors) | WriteCaptions(str(out), config)


def _assert_every_answer_once(sim, out: Path) -> None:
    stats = sim.stats()
    assert stats["requests"]["total"] == len(SAMPLES), "no request was sent twice"
    assert set(stats["successes_by_image"].values()) == {1}
    rows = read_rows(out, "captions")
    assert sorted(Path(r["uri"]).name for r in rows) == [p.name for p in SAMPLES]
    assert not any(r["deduplicated"] for r in rows)
    summary = read_summary(out)
    assert summary["captions"] == len(SAMPLES)
    assert summary["cost_usd"] == pytest.approx(stats["cost_usd"]["realtime"])
    assert summary["tokens"]["prompt"] == stats["tokens"]["realtime"]["prompt"]


def test_a_write_that_fails_once_is_retried_without_calling_the_model(sim, tmp_path) -> None:
    # The bundle-based DirectRunner retries a failed bundle (up to 4 times) in this process.
    config = CaptionConfig.create(base_url=sim.base_url, output=str(tmp_path / "out"))
    flag = tmp_path / "failed-once"
    with beam.Pipeline(runner=BundleBasedDirectRunner()) as p:
        _caption_and_write(p, config, tmp_path / "out", flag, checkpoint=True)
    assert flag.exists(), "the write did fail once"
    _assert_every_answer_once(sim, tmp_path / "out")


def test_a_fused_bundle_retried_in_the_same_process_gets_its_answers_again(sim, tmp_path) -> None:
    # On the FnApiRunner the failing step is fused with the paid calls (no checkpoint), and the
    # run fails; running the same job again in this process is what a runner's retry of the
    # bundle does: the answers come back from the process's answer memory, not the endpoint.
    config = CaptionConfig.create(base_url=sim.base_url, output=str(tmp_path / "out"))
    flag = tmp_path / "failed-once"
    with pytest.raises(Exception, match="on purpose"), beam.Pipeline(
            runner=FnApiRunner(), options=IN_MEMORY) as p:
        _caption_and_write(p, config, tmp_path / "out", flag, checkpoint=False)
    # The requests still in flight when the bundle failed finish on the engine's loop, and
    # their answers are journaled all the same: every paid answer is on disk.
    deadline = time.monotonic() + 30
    while _journaled(tmp_path / "out") < sum(sim.stats()["successes_by_image"].values()):
        assert time.monotonic() < deadline, "paid answers missing from the journal"
        time.sleep(0.05)
    with beam.Pipeline(runner=FnApiRunner(), options=IN_MEMORY) as p:
        _caption_and_write(p, config, tmp_path / "out", flag, checkpoint=False)
    _assert_every_answer_once(sim, tmp_path / "out")
    assert not (tmp_path / "out" / "_journal").exists()


def _journaled(out: Path) -> int:
    return sum(1 for path in (out / "_journal").rglob("*.jsonl")
               for line in path.read_text().splitlines() if json.loads(line))


def test_the_readme_pipeline_runs_as_written(sim, tmp_path, monkeypatch) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## In your own Beam pipeline", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL).group(1)
    monkeypatch.setenv("OPENAI_BASE_URL", sim.base_url)
    monkeypatch.chdir(ROOT)
    code = code.replace('"out/mine"', repr(str(tmp_path / "mine")))
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    assert len(read_rows(tmp_path / "mine", "captions")) == len(SAMPLES)


def test_the_spend_share_outlives_the_engine(sim, tmp_path) -> None:
    # Beam tears idle DoFns down (and with the last one the engine) and sets new ones up; the
    # run's spend share belongs to the worker process, so it carries on instead of starting over.
    config = CaptionConfig.create(base_url=sim.base_url, max_cost_usd=0.0006,
                                  output=str(tmp_path / "out"))
    spent = []
    for half, pattern in enumerate(("[ab]*.jpg", "[c-z]*.jpg")):
        out = tmp_path / f"out{half}"
        with beam.Pipeline(runner=FnApiRunner(), options=IN_MEMORY) as p:
            prepared = (p | ExpandInputs([str(ROOT / "samples" / pattern)])
                        | PrepareImages(PrepareSettings(max_side=512), FetchSettings(),
                                        run_id=config.run_id))
            captioned = prepared.images | CaptionImages(config)
            _ = ((captioned.captions, (prepared.errors, captioned.errors) | beam.Flatten())
                 | WriteCaptions(str(out), config))
        spent.append(sim.stats()["cost_usd"]["realtime"])
        assert engine_registry.live_engine(config.engine_key()) is None, "the engine was closed"
    assert 0 < spent[0] < spent[1] <= 0.0006, spent
    codes = {e["code"] for e in read_rows(tmp_path / "out1", "errors")}
    assert codes == {"budget_exceeded"}, "the second engine inherited the spent share"
