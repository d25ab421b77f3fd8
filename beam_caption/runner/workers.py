"""How many worker processes will send requests at once: the divisor of --rpm, --tpm and the cap.

Locally that is the FnApiRunner's worker count. On Dataflow it is the most workers the job may
have times the SDK processes per worker, which Runner v2 starts one per vCPU (one in all when the
`no_use_multiple_sdk_containers` experiment is set). A vCPU count is read from the machine type
the way Compute Engine names them: `n2-standard-8`, `c3-highcpu-22-lssd`, `custom-8-30720`,
`n2-custom-8-16384-ext`, and the shared-core `e2-medium` (2 vCPUs).
"""

from __future__ import annotations

import multiprocessing
import re

from apache_beam.options.pipeline_options import (
    DebugOptions,
    DirectOptions,
    PipelineOptions,
    StandardOptions,
    WorkerOptions,
)

LOCAL_RUNNERS = ("DirectRunner", "FnApiRunner", "BundleBasedDirectRunner", "PrismRunner")
# A local job runs in the launcher's own process when its image work is about what starting
# worker processes costs (each imports Beam: ~1 s of wall clock before the first request, ~0.8 s
# of CPU each, measured on 2 cores). The work is estimated from the listing: the entropy decode
# of a JPEG costs ~8 ms per MB on this class of machine whatever the scale it is decoded at,
# plus a few ms per image (shrink, encode, request, row); images of unknown size count as
# camera photos.
IN_PROCESS_MAX_WORK_S = 2.0
_WORK_S_PER_IMAGE = 0.004
_WORK_S_PER_MB = 0.008
_UNSIZED_MB = 3.0
# Shared-core machine types, whose names do not end in their vCPU count.
_SHARED_CORE_VCPUS = {"e2-micro": 2, "e2-small": 2, "e2-medium": 2, "f1-micro": 1, "g1-small": 1}
# custom-8-30720, n2-custom-8-16384, n2d-custom-4-8192-ext: vCPUs, then memory in MB.
_CUSTOM = re.compile(r"^(?:[a-z][a-z0-9]*-)?custom-(\d+)-\d+(?:-ext)?$")
# n1-standard-4, c3-highcpu-22, c3-standard-8-lssd, m3-ultramem-32, c3-standard-192-metal.
_PREDEFINED = re.compile(r"^[a-z][a-z0-9]*-[a-z]+-(\d+)(?:-lssd|-metal)?$")


def is_local(options: PipelineOptions) -> bool:
    """True when the job runs on this machine."""
    runner = options.view_as(StandardOptions).runner
    return runner is None or runner.rsplit(".", 1)[-1] in LOCAL_RUNNERS


def machine_vcpus(machine_type: str) -> int | None:
    """vCPUs of a Compute Engine machine type, or None when the name does not say
    (GPU types such as a2-highgpu-1g count GPUs, not vCPUs)."""
    name = machine_type.strip().lower().rsplit("/", 1)[-1]  # full URLs end in the type's name
    if name in _SHARED_CORE_VCPUS:
        return _SHARED_CORE_VCPUS[name]
    match = _CUSTOM.match(name) or _PREDEFINED.match(name)
    return int(match.group(1)) if match else None


def expected_worker_processes(options: PipelineOptions) -> tuple[int | None, str]:
    """(processes, how that was decided); processes is None when the options do not fix it."""
    if is_local(options):
        direct = options.view_as(DirectOptions)
        if direct.direct_running_mode != "multi_processing":
            return 1, f"one local process (--direct_running_mode {direct.direct_running_mode})"
        count = direct.direct_num_workers or multiprocessing.cpu_count()
        return count, f"{count} local worker processes"
    workers = options.view_as(WorkerOptions)
    machines = workers.max_num_workers or (
        workers.num_workers if workers.autoscaling_algorithm == "NONE" else None)
    if not machines:
        return None, "no --max_num_workers (autoscaling may add workers)"
    experiments = options.view_as(DebugOptions).experiments or []
    if "no_use_multiple_sdk_containers" in experiments:
        return machines, f"{machines} workers x 1 SDK process (no_use_multiple_sdk_containers)"
    if not workers.machine_type:
        return None, "no --machine_type (its vCPU count sets the SDK processes per worker)"
    vcpus = machine_vcpus(workers.machine_type)
    if vcpus is None:
        return None, f"the vCPU count of machine type {workers.machine_type!r} is unknown"
    return machines * vcpus, (f"{machines} workers x {vcpus} SDK processes "
                              f"({workers.machine_type})")


def in_process_is_faster(images: int, size_bytes: int, unsized: int) -> bool:
    """True when a local job of `images` (`size_bytes` in all, `unsized` of unknown size) has so
    little image work that worker processes would take longer to start than they would save."""
    megabytes = size_bytes / 1e6 + unsized * _UNSIZED_MB
    return images * _WORK_S_PER_IMAGE + megabytes * _WORK_S_PER_MB <= IN_PROCESS_MAX_WORK_S
