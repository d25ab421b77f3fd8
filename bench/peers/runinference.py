"""Peer: what a Beam user writes today. RunInference with a RemoteModelHandler subclass that makes
one synchronous `requests` call per element, images shrunk to 512 px as beam-caption does, on the
same local runner (FnApiRunner, multi-processing, one worker process per core unless told).

RemoteModelHandler brings Beam's retry with exponential backoff and its client-side throttler;
batches are of one element so that a retried batch never re-sends (and re-pays) another image.

    python bench/peers/runinference.py --list L --base-url URL --output DIR [--workers 2]
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import apache_beam as beam
import requests
from apache_beam.ml.inference.base import PredictionResult, RemoteModelHandler, RunInference
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# Beam's worker processes import what the pickled pipeline names: let them find `common`.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(HERE), str(HERE.parents[1]), os.environ.get("PYTHONPATH", "")) if p)

from common import (  # noqa: E402
    PeerResult,
    caption_of,
    chat_body,
    parse_args,
    prepared_data_url,
    read_paths,
    write_result,
)


class ChatCompletionsHandler(RemoteModelHandler[str, dict, requests.Session]):
    """One synchronous chat.completions POST per element (a data URL); raises on non-200."""

    def __init__(self, base_url: str) -> None:
        super().__init__(namespace="bench_runinference", num_retries=5)
        self._url = base_url.rstrip("/") + "/chat/completions"

    def create_client(self) -> requests.Session:
        """A keep-alive session that never consults proxy settings (loopback only)."""
        session = requests.Session()
        session.trust_env = False
        session.headers["Authorization"] = "Bearer bench"
        return session

    def request(self, batch: Sequence[str], model: requests.Session,
                inference_args: dict[str, Any] | None = None) -> Iterable[PredictionResult]:
        """POST each element in turn; an error status raises so that Beam retries."""
        out = []
        for data_url in batch:
            resp = model.post(self._url, json=chat_body(data_url), timeout=120)
            resp.raise_for_status()
            out.append(PredictionResult(data_url[:64], caption_of(resp.json())))
        return out

    def batch_elements_kwargs(self) -> dict[str, int]:
        """Batches of one: a retried batch re-sends only the element that failed."""
        return {"min_batch_size": 1, "max_batch_size": 1}


def main(argv: list[str] | None = None) -> int:
    """Build and run the pipeline; write captions-*.jsonl and result.json."""
    args = parse_args(__doc__.splitlines()[0], argv, concurrency=None)
    paths = read_paths(args.list, args.limit)
    options = PipelineOptions(["--direct_running_mode=multi_processing",
                               f"--direct_num_workers={os.cpu_count() or 1}"])
    max_side, out_prefix = args.max_side, str(args.output / "captions")
    with beam.Pipeline(runner=FnApiRunner(), options=options) as p:
        results = (p | beam.Create(paths) | beam.Reshuffle()
                   | "Prepare" >> beam.Map(prepared_data_url, max_side)
                   | RunInference(ChatCompletionsHandler(args.base_url)))
        (results | beam.Map(lambda r: json.dumps({"caption": r.inference}))
         | beam.io.WriteToText(out_prefix, file_name_suffix=".jsonl"))
    ok = sum(1 for f in args.output.glob("captions-*.jsonl")
             for _ in f.read_text().splitlines())
    write_result(args.output, PeerResult(ok=ok, failed=len(paths) - ok))
    return 0


if __name__ == "__main__":
    sys.exit(main())
