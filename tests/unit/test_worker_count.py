"""How many worker processes share --rpm, --tpm and --max-cost-usd, from the runner's options."""

from __future__ import annotations

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from beam_caption.runner.workers import expected_worker_processes, machine_vcpus

DATAFLOW = ["--runner=DataflowRunner"]


@pytest.mark.parametrize(("machine_type", "vcpus"), [
    ("n1-standard-1", 1), ("n1-standard-4", 4), ("n2-highmem-16", 16), ("c2-standard-60", 60),
    ("c3-highcpu-22", 22), ("c3-standard-8-lssd", 8), ("c3-standard-192-metal", 192),
    ("m1-ultramem-40", 40), ("t2a-standard-8", 8), ("c4a-highcpu-72", 72),
    # Custom machine types name vCPUs, then memory in MB (not 30,720 vCPUs).
    ("custom-8-30720", 8), ("n2-custom-8-16384", 8), ("n2d-custom-4-8192-ext", 4),
    ("e2-custom-2-4096", 2),
    # Shared-core types: e2-medium is 2 vCPUs sharing a core, not 1 (nor "medium").
    ("e2-micro", 2), ("e2-small", 2), ("e2-medium", 2), ("f1-micro", 1), ("g1-small", 1),
    # Full resource URLs end in the type's name.
    ("zones/us-central1-a/machineTypes/n1-standard-8", 8),
])
def test_vcpus_of_the_machine_types_dataflow_takes(machine_type: str, vcpus: int) -> None:
    assert machine_vcpus(machine_type) == vcpus


@pytest.mark.parametrize("machine_type", ["a2-highgpu-1g", "a3-megagpu-8g", "n1-standard",
                                          "standard-4", ""])
def test_names_that_do_not_say_their_vcpus_are_unknown(machine_type: str) -> None:
    assert machine_vcpus(machine_type) is None


@pytest.mark.parametrize(("flags", "processes"), [
    (["--max_num_workers=3", "--machine_type=n1-standard-4"], 12),
    (["--max_num_workers=10", "--machine_type=custom-8-30720"], 80),
    (["--max_num_workers=5", "--machine_type=e2-medium"], 10),
    (["--num_workers=4", "--autoscaling_algorithm=NONE", "--machine_type=n2-standard-2"], 8),
    (["--max_num_workers=7", "--experiments=no_use_multiple_sdk_containers"], 7),
    (["--max_num_workers=2", "--machine_type=n1-standard-4", "--num_workers=1"], 8),
])
def test_dataflow_processes_are_workers_times_sdk_processes(flags, processes) -> None:
    count, how = expected_worker_processes(PipelineOptions(DATAFLOW + flags))
    assert count == processes, how


@pytest.mark.parametrize("flags", [
    [],  # autoscaling with no ceiling
    ["--num_workers=4", "--machine_type=n1-standard-4"],  # autoscaling may go past 4
    ["--max_num_workers=3"],  # vCPUs per worker unknown
    ["--max_num_workers=3", "--machine_type=a2-highgpu-1g"],
])
def test_dataflow_options_that_do_not_fix_the_count(flags) -> None:
    count, how = expected_worker_processes(PipelineOptions(DATAFLOW + flags))
    assert count is None and how


def test_local_runs_count_their_worker_processes() -> None:
    assert expected_worker_processes(PipelineOptions([
        "--direct_running_mode=multi_processing", "--direct_num_workers=3"]))[0] == 3
    assert expected_worker_processes(PipelineOptions([
        "--direct_running_mode=in_memory"]))[0] == 1


@pytest.mark.parametrize(("images", "size", "unsized", "in_process"), [
    (20, 20 * 60_000, 0, True),  # a handful of web-size photos
    (400, 400 * 60_000, 0, True),  # 1.6 s + 0.2 s of work: still below the start-up it saves
    (500, 500 * 60_000, 0, False),  # 2.0 s + 0.24 s: worker processes pay off
    (60, 60 * 3_500_000, 0, True),  # 60 camera photos: 0.24 s + 1.7 s
    (80, 80 * 3_500_000, 0, False),  # 80: 0.32 s + 2.2 s
    (60, 0, 60, True),  # unknown sizes count as 3 MB camera photos
    (90, 0, 90, False),
    (0, 0, 0, True),
])
def test_small_local_jobs_run_in_process(images, size, unsized, in_process) -> None:
    from beam_caption.runner.workers import in_process_is_faster

    assert in_process_is_faster(images, size, unsized) is in_process


def test_a_small_job_runs_in_process_unless_the_flags_say_otherwise() -> None:
    from apache_beam.options.pipeline_options import DirectOptions

    from beam_caption.job import pipeline_options

    def mode(flags: list[str], in_process: bool) -> tuple[str, int]:
        direct = pipeline_options(flags, in_process=in_process).view_as(DirectOptions)
        return direct.direct_running_mode, direct.direct_num_workers

    assert mode([], True) == ("in_memory", 1)
    assert mode([], False) == ("multi_processing", 0)  # one worker per core
    assert mode(["--direct_num_workers=2"], True) == ("multi_processing", 2)
    assert mode(["--direct_running_mode=multi_processing"], True) == ("multi_processing", 0)
    assert expected_worker_processes(pipeline_options([], in_process=True)) == (
        1, "one local process (--direct_running_mode in_memory)")
    threads = pipeline_options(["--direct_running_mode=multi_threading"])
    assert expected_worker_processes(threads) == (
        1, "one local process (--direct_running_mode multi_threading)")
    # Not a local runner: nothing local is added.
    remote = pipeline_options([*DATAFLOW, "--project=p"], in_process=True)
    assert "direct_running_mode" not in remote.get_all_options(drop_default=True)
