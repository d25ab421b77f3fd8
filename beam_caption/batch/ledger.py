"""batches.json: the Batch API state of an output directory, read and written via Beam FileSystems.

It records, per batch-mode run, what collect needs to build rows on any machine later (model,
prices, answer schema, endpoint location — never the key) and, per shard file, its file id, batch
id, status and whether its rows were collected. It is written before and after every upload and
batch creation, so a launcher that dies at any point leaves enough to continue without paying
twice: a shard with a file id is never uploaded again, one with a batch id is never submitted
again (and batch/api.py's create_once looks for a batch on the file before creating one).

Writes go to a temporary name and are renamed over batches.json (atomic on local disks; on GCS a
copy that replaces the object whole), so a reader never sees half a document. More than one
process may write it at once (a launcher submitting, `batch cancel`, `batch collect`), so a
write merges what is on disk first (`save_ledger`): a batch id, a file id, a cancel request or a
collected mark one writer recorded is never dropped by another's older copy.

A shard being submitted carries a claim (host, pid, when): another submitter leaves it to a live
claimant, so two processes never create batches for the same shard. A claim left by a process
that died is taken over where the provider can be asked whether the batch exists (OpenAI looks
for a batch on the uploaded file, Gemini for one of the shard's name); where it cannot
(Anthropic), the shard waits for the user's word (`batch submit --resubmit-interrupted`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from apache_beam.io.filesystems import FileSystems

from beam_caption.api.request import RequestSettings
from beam_caption.api.structured import StructuredSpec
from beam_caption.batch.wire import TERMINAL
from beam_caption.config import CaptionConfig
from beam_caption.cost.pricing import ModelPrice
from beam_caption.engine.settings import EndpointConfig
from beam_caption.errors import ConfigError
from beam_caption.layout import LEDGER_NAME
from beam_caption.pipeline.rows import utc_now

VERSION = 2  # 1: the run's model, prompt, price and schema nested under "rows"
# Run states: "submitting" until every shard has a batch; "submitted"; "collected" once every
# shard's rows are written (cancelled runs end "collected" too, after their rows are written).
SUBMITTING, SUBMITTED, COLLECTED = "submitting", "submitted", "collected"


@dataclass
class ShardRecord:
    """One JSONL input file and the batch made of it."""

    index: int
    path: str  # relative to the output directory
    meta: str  # the sidecar Parquet (request_key, uri, sizes...), relative too
    lines: int  # requests in the file (unique request_keys)
    images: int  # rows in the sidecar (images sharing a request_key each have one)
    bytes: int
    file_id: str | None = None
    uploaded_at: int | None = None
    batch_id: str | None = None
    status: str = "written"  # then "uploaded", then the batch's own status
    counts: dict[str, int] = field(default_factory=dict)
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[str] = field(default_factory=list)
    cancel_requested: bool = False
    collected: bool = False
    # While a process submits it: {"host", "pid", "since", "token"}, and "unresolved" once an
    # inline create failed without telling whether the batch was made.
    claim: dict[str, Any] | None = None


@dataclass
class RunRecord:
    """One batch-mode run: where its batches went, how to rebuild its rows, and its shards."""

    run_id: str
    created_at: str
    # base_url, api_key_env, api_key_file, api_key_secret, provider (never a key)
    endpoint: dict[str, Any]
    info: dict[str, Any]  # RunInfo.as_dict(): model, prompt, base_url, max_side, max_cost_usd
    price: dict[str, Any] | None = None  # the ModelPrice the rows are billed at (batch discount)
    structured: dict[str, Any] | None = None  # the --schema spec answers are parsed with
    supersede: list[str] = field(default_factory=list)  # error files collect replaces
    # Run ids whose answer journals this run wrote to Parquet (--resume): deleted when collected.
    journals: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # the library's skipped files by kind
    state: str = SUBMITTING
    shards: list[ShardRecord] = field(default_factory=list)

    @classmethod
    def for_run(cls, caption: CaptionConfig, supersede: tuple[str, ...] = (),
                journals: tuple[str, ...] = ()) -> RunRecord:
        """The record of a run about to write its shards (they are added when submitted)."""
        endpoint = caption.endpoint
        return cls(run_id=caption.run_id, created_at=utc_now().isoformat(),
                   endpoint={"base_url": endpoint.base_url, "api_key_env": endpoint.api_key_env,
                             "api_key_file": endpoint.api_key_file,
                             "api_key_secret": endpoint.api_key_secret,
                             "provider": endpoint.provider},
                   info=caption.run_info().as_dict(),
                   price=dataclasses.asdict(caption.price) if caption.price else None,
                   structured=(dataclasses.asdict(caption.structured) if caption.structured
                               else None),
                   supersede=list(supersede), journals=list(journals))

    def caption_config(self) -> CaptionConfig:
        """The CaptionConfig the row builders need, rebuilt on any machine from the record."""
        return CaptionConfig(
            request=RequestSettings(model=self.info["model"], prompt=self.info.get("prompt") or ""),
            endpoint=EndpointConfig(base_url=self.endpoint["base_url"],
                                    provider=self.endpoint.get("provider", "openai")),
            price=ModelPrice(**self.price) if self.price else None, run_id=self.run_id,
            structured=StructuredSpec(**self.structured) if self.structured else None)

    @property
    def open(self) -> bool:
        """True until every row of the run is written."""
        return self.state != COLLECTED

    def unsubmitted(self) -> list[ShardRecord]:
        """Shards with no batch yet (and not cancelled before submission)."""
        return [s for s in self.shards if s.batch_id is None and not s.cancel_requested]


@dataclass
class BatchLedger:
    """Every batch-mode run of one output directory, oldest first."""

    runs: list[RunRecord] = field(default_factory=list)

    def run(self, run_id: str) -> RunRecord | None:
        """The run called `run_id`, if recorded."""
        return next((r for r in self.runs if r.run_id == run_id), None)

    def open_runs(self) -> list[RunRecord]:
        """Runs whose rows are not all written yet."""
        return [r for r in self.runs if r.open]

    def to_json(self) -> dict[str, Any]:
        """The batches.json document."""
        return {"version": VERSION, "runs": [dataclasses.asdict(r) for r in self.runs]}

    @classmethod
    def from_json(cls, data: Any, origin: str) -> BatchLedger:
        """Parse a batches.json document; ConfigError if it is not one."""
        if not isinstance(data, dict) or data.get("version") not in (1, VERSION) \
                or not isinstance(data.get("runs"), list):
            raise ConfigError(f"{origin} is not a beam-caption batches.json (version {VERSION})")
        try:
            runs = [RunRecord(**{**_upgraded(run),
                                 "shards": [ShardRecord(**s) for s in run["shards"]]})
                    for run in data["runs"]]
        except (TypeError, KeyError) as exc:
            raise ConfigError(f"{origin} has an unexpected run or shard record ({exc})") from None
        for run in runs:
            missing = ([] if isinstance(run.endpoint, dict) and "base_url" in run.endpoint
                       else ["endpoint.base_url"])
            missing += [] if isinstance(run.info, dict) and "model" in run.info else ["info.model"]
            if missing:
                raise ConfigError(f"{origin}: run {run.run_id} has no {', '.join(missing)}; it "
                                  "may have been edited by hand")
        return cls(runs)


def _upgraded(run: dict[str, Any]) -> dict[str, Any]:
    """A version-1 run record (model, prompt, price, schema under "rows") in today's fields."""
    if "rows" not in run:
        return run
    rows = run["rows"]
    info = {"run_id": run["run_id"], "model": rows["model"], "prompt": rows.get("prompt"),
            "base_url": run["endpoint"]["base_url"], **rows.get("run_info", {})}
    rest = {k: v for k, v in run.items() if k != "rows"}
    return {**rest, "info": info, "price": rows.get("price"), "structured": rows.get("structured")}


def ledger_path(output: str) -> str:
    """Where batches.json lives in `output`."""
    return FileSystems.join(output, LEDGER_NAME)


def resolve(output: str, relative: str) -> str:
    """A path recorded relative to `output`, made absolute."""
    return FileSystems.join(output, relative)


def load_ledger(output: str) -> BatchLedger:
    """The ledger of `output`; an empty one if there is none."""
    path = ledger_path(output)
    if not FileSystems.exists(path):
        return BatchLedger()
    with FileSystems.open(path) as handle:
        raw = handle.read()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(f"{path} is not valid JSON; it may have been edited by hand") from None
    return BatchLedger.from_json(data, path)


_STATES = (SUBMITTING, SUBMITTED, COLLECTED)


def _merge_shard(mine: ShardRecord, theirs: ShardRecord) -> None:
    """Add to `mine`, in place, whatever `theirs` recorded that mine has not (ids, a cancel
    request, the collected mark, a newer claim)."""
    if (mine.batch_id is None and theirs.batch_id is not None) or (
            theirs.status in TERMINAL and mine.status not in TERMINAL):
        # Theirs is newer news: a batch id, or a batch that ended (never back to running).
        mine.status, mine.counts, mine.errors = theirs.status, theirs.counts, theirs.errors
    elif mine.file_id is None and theirs.file_id is not None and mine.status == "written":
        mine.status = theirs.status
    for name in ("file_id", "uploaded_at", "batch_id", "output_file_id", "error_file_id"):
        if getattr(mine, name) is None:
            setattr(mine, name, getattr(theirs, name))
    mine.cancel_requested = mine.cancel_requested or theirs.cancel_requested
    mine.collected = mine.collected or theirs.collected
    if mine.batch_id is not None:
        mine.claim = None
    elif theirs.claim and (not mine.claim
                           or theirs.claim.get("since", 0) > mine.claim.get("since", 0)):
        mine.claim = theirs.claim  # claimed since this copy was read


def merge(mine: BatchLedger, theirs: BatchLedger) -> None:
    """Fold `theirs` (what is on disk now) into `mine`, in place (callers keep their run and
    shard objects): runs only they know are added, and each shard keeps what either recorded."""
    known = {r.run_id: r for r in theirs.runs}
    for run in mine.runs:
        other = known.get(run.run_id)
        if other is None:
            continue
        shards = {s.index: s for s in other.shards}
        for shard in run.shards:
            if shard.index in shards:
                _merge_shard(shard, shards[shard.index])
        run.state = max(run.state, other.state, key=_STATES.index)
    ours = {r.run_id for r in mine.runs}
    mine.runs.extend(r for r in theirs.runs if r.run_id not in ours)


def refresh(output: str, ledger: BatchLedger) -> None:
    """Fold what other processes wrote to batches.json since `ledger` was read into it."""
    merge(ledger, load_ledger(output))


@contextlib.contextmanager
def transaction(output: str, ledger: BatchLedger) -> Iterator[BatchLedger]:
    """Read, change and write batches.json as one step: `ledger` is merged with the file on
    enter and written on exit, and no other process's transaction runs in between (a lock file
    beside it, on local disks; on gs:// the merge alone guards, with a window of milliseconds).
    Never nest two on one output in one process (the lock is not reentrant)."""
    with _locked(output):
        refresh(output, ledger)
        yield ledger
        _write(output, ledger)


def save_ledger(output: str, ledger: BatchLedger) -> None:
    """Write `ledger` to batches.json, merged with what is there now (other writers' ids,
    cancels and collected marks are kept; `ledger` is updated with them)."""
    with transaction(output, ledger):
        pass


def _write(output: str, ledger: BatchLedger) -> None:
    """A temporary file of this writer's own, then a rename over batches.json."""
    path = ledger_path(output)
    temporary = f"{path}.{uuid.uuid4().hex[:12]}.tmp"
    with FileSystems.create(temporary, mime_type="application/json") as handle:
        handle.write(json.dumps(ledger.to_json(), indent=1).encode("utf-8"))
    FileSystems.rename([temporary], [path])


@contextlib.contextmanager
def _locked(output: str) -> Iterator[None]:
    """An exclusive lock on OUTPUT/batches.json.lock for local outputs; nothing elsewhere."""
    if "://" in output:
        yield
        return
    os.makedirs(output, exist_ok=True)
    with open(ledger_path(output) + ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
