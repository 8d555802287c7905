"""A job's start-up and work (`runtime.start_job`, `runtime.work_begins`), and the tables a run's
timings are collected into (`timings`)."""

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from tiny_world import require_device

from crosscoder_interventions.runtime import JOB_TIMING
from crosscoder_interventions.timings import TIMING_PATTERN, job_timings, run_row, write_timings

REPO = Path(__file__).resolve().parents[1]
BENCHMARK_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _job(tmp_path: Path, before: float, after: float, *, marks: bool = True, work: str = "") -> tuple[float, float, float]:
    """Runs a job that sleeps `before` seconds, marks its work's beginning, sleeps `after` and runs `work`; its timing line."""
    log = tmp_path / "job.log"
    script = (
        "import time\n"
        "import torch\n"
        "from crosscoder_interventions.runtime import start_job, work_begins\n"
        f"log = start_job({str(log)!r}, threads=1, seed=0)\n"
        f"time.sleep({before})\n"
        + ("work_begins()\n" if marks else "")
        + f"time.sleep({after})\n"
        + work
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO / "workflow", timeout=120)
    last = log.read_text().splitlines()[-1]
    match = TIMING_PATTERN.search(last)
    assert match is not None, last
    return tuple(float(value) for value in match.groups())  # type: ignore[return-value]


def test_a_job_logs_its_start_up_and_its_work_last(tmp_path):
    startup_s, work_s, peak_gpu_mib = _job(tmp_path, 1.0, 2.0)
    # Start-up also holds the interpreter's start and the imports before start_job.
    assert 1.0 <= startup_s < 1.0 + 30 and 2.0 <= work_s < 2.5
    assert math.isnan(peak_gpu_mib)


def test_a_cuda_job_logs_the_most_gpu_memory_its_tensors_held(tmp_path):
    require_device("cuda")
    work = "x = torch.empty(256 * 2**20, dtype=torch.uint8, device='cuda'); del x\ny = torch.empty(2**20, device='cuda')\n"
    _, _, peak_gpu_mib = _job(tmp_path, 0.0, 0.0, work=work)
    assert 256 <= peak_gpu_mib < 256 + 16


def test_a_job_that_never_marks_its_work_is_all_start_up(tmp_path):
    startup_s, work_s, _ = _job(tmp_path, 0.0, 1.0, marks=False)
    assert startup_s >= 1.0 and work_s < 0.1


def test_the_timing_line_is_the_one_that_is_read_back():
    line = JOB_TIMING.format(startup_s=1.25, work_s=2.5, peak_gpu_mib=float("nan"))
    assert TIMING_PATTERN.fullmatch(line).groups() == ("1.250", "2.500", "nan")


def _write_job(results: Path, job: str, wall_s: float, timing: tuple[float, float, float] | None, finished: float) -> None:
    log, benchmark = results / "logs" / f"{job}.log", results / "benchmarks" / f"{job}.tsv"
    log.parent.mkdir(parents=True, exist_ok=True)
    benchmark.parent.mkdir(parents=True, exist_ok=True)
    lines = ["2026-01-01 INFO started"]
    if timing is not None:
        lines.append(JOB_TIMING.format(startup_s=timing[0], work_s=timing[1], peak_gpu_mib=timing[2]))
    log.write_text("\n".join(lines) + "\n")
    benchmark.write_text(BENCHMARK_HEADER + f"{wall_s}\t0:00:01\t300\t900\t1\t1\t0\t0\t50\t{wall_s / 2}\n")
    os.utime(benchmark, (finished, finished))


def test_every_job_with_a_benchmark_gets_a_row_and_only_this_runs_jobs_are_summed(tmp_path):
    now = time.time()
    _write_job(tmp_path, "generations/ablate_many_layer_feature_3", 10.0, (7.0, 3.0, 512.0), now - 5)
    _write_job(tmp_path, "scores/ablate_feature_3", 6.0, (5.5, 0.5, float("nan")), now - 1)
    _write_job(tmp_path, "world/base_model", 100.0, None, now - 3600)
    (tmp_path / "logs/orphan.log").write_text("a log without a benchmark\n")
    timings = job_timings(tmp_path).set_index("job")
    assert sorted(timings.index) == ["logs/generations/ablate_many_layer_feature_3", "logs/scores/ablate_feature_3", "logs/world/base_model"]
    assert timings.loc["logs/generations/ablate_many_layer_feature_3", ["wall_s", "cpu_s", "startup_s", "work_s", "peak_gpu_mib"]].tolist() == [
        10.0, 5.0, 7.0, 3.0, 512.0]
    assert timings.loc["logs/world/base_model", ["startup_s", "work_s"]].isna().all()
    run = run_row(timings.reset_index(), started=now - 60, finished=now)
    assert run["jobs"] == 2 and run["job_s"] == 16.0 and run["startup_s"] == 12.5 and run["work_s"] == 3.5
    assert run["peak_gpu_mib"] == 512.0 and run["wall_s"] == pytest.approx(60.0)


def test_runs_are_appended_and_an_invocation_that_ran_nothing_adds_none(tmp_path):
    now = time.time()
    _write_job(tmp_path, "features/discover_features", 4.0, (3.0, 1.0, float("nan")), now - 10)
    write_timings(tmp_path, started=now - 20, finished=now)
    write_timings(tmp_path, started=now + 1, finished=now + 2)
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert len(runs) == 1 and runs["jobs"].tolist() == [1] and math.isnan(runs["peak_gpu_mib"].iloc[0])
    assert len(pd.read_csv(tmp_path / "timings.csv")) == 1
