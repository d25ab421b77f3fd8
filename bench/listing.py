"""Listing at scale: wall time and peak memory of input expansion, side by side.

    .venv/bin/python bench/listing.py      # about 3 minutes on 2 cores; results.json + RESULTS.md

Two trees: a local tree of 100,000 tiny files (200 folders of 500) and a Cloud Storage bucket of
20,000 objects under 200 prefixes (gcp-storage-emulator in its own process, filled straight into
its store). For each, three systems count the .jpg files a glob names, each in a fresh child
process (so every figure includes its imports and start-up):

- bare listing (the floor): os.scandir / the storage client's list_blobs, counting, no Beam;
- Beam MatchAll: Create([pattern]) | fileio.MatchAll() | Count, on the FnApiRunner in memory
  (one FileSystems.match holding every match), and the same followed by a Reshuffle (what
  ExpandInputs did before the fan-out: the fair peer, since ExpandInputs ends in one too);
- beam-caption ExpandInputs: the split, the reshuffled folders, each folder listed once, the
  final Reshuffle, then Count, on the same runner.

Then the memory of listing one folder as it grows (2,000 / 20,000 / 100,000 local files; 2,000 /
20,000 objects under one GCS prefix): the worker step of ExpandInputs (inputs/listing.py
`list_part`, streamed) beside Beam's FileSystems.match of the same folder. The child reports its
own peak RSS above its RSS once imports are done, so the figure is the listing's alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402
from bench.measure import run_measured  # noqa: E402
from bench.scenarios import SCENARIOS  # noqa: E402

RESULTS_JSON = ROOT / "bench" / "results.json"
RESULTS_MD = ROOT / "bench" / "RESULTS.md"
SYSTEMS = ("bare", "matchall", "matchall-reshuffle", "beam-caption")
FOLDER_SIZES_LOCAL = (2_000, 20_000, 100_000)
FOLDER_SIZES_GCS = (2_000, 20_000)


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _bare_count(pattern: str) -> int:
    """The floor: list and count with nothing but the storage system's own client."""
    if pattern.startswith("gs://"):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        bucket, _, rest = pattern[5:].partition("/")
        client = storage.Client(project="bench", credentials=AnonymousCredentials())
        prefix = rest.split("*", 1)[0]
        return sum(1 for blob in client.list_blobs(bucket, prefix=prefix)
                   if blob.name.endswith(".jpg"))
    root = pattern.split("*", 1)[0]
    count, stack = 0, [root]
    while stack:
        for entry in os.scandir(stack.pop()):
            if entry.is_dir():
                stack.append(entry.path)
            elif entry.name.endswith(".jpg"):
                count += 1
    return count


def _pipeline_count(system: str, pattern: str) -> int:
    import apache_beam as beam
    from apache_beam.io import fileio
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from beam_caption.inputs.sources import ExpandInputs

    options = PipelineOptions(["--direct_running_mode=in_memory", "--direct_num_workers=1"])
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "count"  # functions are pickled: the count comes back in a file
        with beam.Pipeline(runner=FnApiRunner(), options=options) as pipeline:
            if system.startswith("matchall"):
                files = pipeline | beam.Create([pattern]) | fileio.MatchAll()
                if system == "matchall-reshuffle":  # what ExpandInputs did before the fan-out
                    files = files | beam.Reshuffle()
            else:
                files = pipeline | ExpandInputs([pattern])
            _ = (files | beam.combiners.Count.Globally()
                 | beam.Map(lambda n, path: Path(path).write_text(str(n)), str(result)))
        return int(result.read_text())


def _folder_count(system: str, folder_pattern: str) -> int:
    if system == "match":
        from apache_beam.io.filesystems import FileSystems

        return len(FileSystems.match([folder_pattern])[0].metadata_list)
    from beam_caption.inputs.listing import Part, list_part, split

    return sum(sum(1 for _ in list_part(item)) if isinstance(item, Part) else 1
               for item in split(folder_pattern))


def child(system: str, pattern: str) -> None:
    """One measured run in this process: print a JSON line of what it found and its memory."""
    if system in ("stream", "match"):
        # Import what the step needs before the baseline, so the figure is the listing's.
        import apache_beam.io.gcp.gcsio  # noqa: F401
        from apache_beam.io.filesystems import FileSystems  # noqa: F401

        import beam_caption.inputs.listing  # noqa: F401
    baseline = _rss_mb()
    started = time.monotonic()
    if system == "bare":
        count = _bare_count(pattern)
    elif system in ("stream", "match"):
        count = _folder_count(system, pattern)
    else:
        count = _pipeline_count(system, pattern)
    print(json.dumps({"count": count, "seconds": round(time.monotonic() - started, 2),
                      "baseline_mb": round(baseline, 1), "peak_mb": round(_peak_mb(), 1)}))


def serve_emulator(ready: Path) -> None:
    """A GCS emulator holding the benchmark buckets; writes its environment to `ready`, then
    serves until stdin closes."""
    from tests.fixtures.gcs_emulator import fill_bucket, gcs_emulator

    with gcs_emulator(ready.parent) as (server, env):
        fill_bucket(server, "lib", (f"p{p:03d}/img{i:04d}.jpg"
                                    for p in range(200) for i in range(100)))
        for size in FOLDER_SIZES_GCS:
            fill_bucket(server, "flat", (f"n{size}/img{i:06d}.jpg" for i in range(size)))
        ready.write_text(json.dumps(env))
        sys.stdin.read()


def _local_trees(root: Path) -> tuple[Path, dict[int, Path]]:
    tree = root / "tree"
    for folder in range(200):
        path = tree / f"f{folder:03d}"
        path.mkdir(parents=True)
        for i in range(500):
            (path / f"img{i:04d}.jpg").write_bytes(b"\xff\xd8")
    flat = {}
    for size in FOLDER_SIZES_LOCAL:
        flat[size] = root / f"flat{size}"
        flat[size].mkdir()
        for i in range(size):
            (flat[size] / f"img{i:06d}.jpg").write_bytes(b"\xff\xd8")
    return tree, flat


def _measure(system: str, pattern: str, env: dict[str, str], log: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", system, pattern]
    measured = run_measured(cmd, log, env={**os.environ, **env})
    if measured.returncode != 0:
        raise SystemExit(f"{system} on {pattern} failed:\n{log.read_text()[-3000:]}")
    found = json.loads(log.read_text().strip().splitlines()[-1])
    return {"system": system, "pattern": pattern, "wall_s": round(measured.wall_s, 2),
            "cpu_s": round(measured.cpu_s, 2), "tree_peak_rss_mb": round(measured.peak_rss_mb),
            **found, "command": f"bench/listing.py --child {system} '{pattern}'"}


def main() -> None:
    """Build the trees, start the emulator, measure every system, store and render."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, metavar=("SYSTEM", "PATTERN"), help=argparse.SUPPRESS)
    parser.add_argument("--serve-emulator", metavar="READY_FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ["NO_GCE_CHECK"] = "true"
    if args.child:
        child(*args.child)
        return
    if args.serve_emulator:
        serve_emulator(Path(args.serve_emulator))
        return
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-listing-") as tmp:
        root = Path(tmp)
        tree, flat = _local_trees(root)
        ready = root / "emulator" / "env.json"
        ready.parent.mkdir()
        server = subprocess.Popen([sys.executable, str(Path(__file__).resolve()),
                                   "--serve-emulator", str(ready)], stdin=subprocess.PIPE)
        try:
            while not ready.exists():
                if server.poll() is not None:
                    raise SystemExit("the GCS emulator did not start")
                time.sleep(0.2)
            time.sleep(0.2)
            gcs_env = json.loads(ready.read_text())
            rows = _measure_all(root, tree, flat, gcs_env)
        finally:
            server.stdin.close()
            server.wait(timeout=30)
    results = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {"scenarios": {}}
    results["listing"] = {"rows": rows, "run_at": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                time.gmtime()),
                          "seconds": round(time.monotonic() - started), "machine": report.machine()}
    RESULTS_JSON.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    RESULTS_MD.write_text(report.render(results, order=list(SCENARIOS)))
    print("\n".join(report.listing_section(results["listing"])))


def _measure_all(root: Path, tree: Path, flat: dict[int, Path],
                 gcs_env: dict[str, str]) -> list[dict[str, Any]]:
    logs = root / "logs"
    logs.mkdir()
    rows = []
    trees = [("local", 100_000, 200, f"{tree}/**/*.jpg", {}),
             ("gcs", 20_000, 200, "gs://lib/**/*.jpg", gcs_env)]
    for where, objects, folders, pattern, env in trees:
        for system in SYSTEMS:
            row = _measure(system, pattern, env, logs / f"{where}-{system}.log")
            rows.append({"set": "tree", "where": where, "objects": objects, "folders": folders,
                         **row})
            print(f"{where} {system}: {row['count']} files, {row['wall_s']} s, "
                  f"{row['tree_peak_rss_mb']} MB", flush=True)
    folders_to_list = [("local", size, f"{flat[size]}/*.jpg", {}) for size in flat]
    folders_to_list += [("gcs", size, f"gs://flat/n{size}/*.jpg", gcs_env)
                        for size in FOLDER_SIZES_GCS]
    for where, size, pattern, env in folders_to_list:
        for system in ("stream", "match"):
            row = _measure(system, pattern, env, logs / f"folder-{where}-{size}-{system}.log")
            rows.append({"set": "folder", "where": where, "objects": size, "folders": 1, **row})
            print(f"one {where} folder of {size}, {system}: {row['count']} files, "
                  f"{row['peak_mb'] - row['baseline_mb']:.1f} MB above imports", flush=True)
    return rows


if __name__ == "__main__":
    main()
