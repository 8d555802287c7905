"""Where a run's time went: every job's wall time split into start-up and work (from the last line of
its log, `runtime.JOB_TIMING`) beside Snakemake's benchmark of it, and one line per successful
invocation. Written when a run succeeds (the Snakefile's `onsuccess`), into the results folder:

- `timings.csv`: one row per job whose log and benchmark are there, the newest run of each;
- `runs.csv`: appended, one row per successful invocation that ran jobs.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

# runtime.JOB_TIMING, read back.
TIMING_PATTERN = re.compile(r"job timing: startup_s=(\S+) work_s=(\S+) peak_gpu_mib=(\S+)")
TIMING_COLUMNS = ["job", "wall_s", "cpu_s", "max_rss_mb", "startup_s", "work_s", "peak_gpu_mib", "finished"]
RUN_COLUMNS = ["started", "wall_s", "jobs", "job_s", "startup_s", "work_s", "peak_gpu_mib"]


def _last_timing(log: Path) -> tuple[float, float, float]:
    """A job log's start-up, work and peak GPU memory (its last timing line; nan where it has none)."""
    matches = TIMING_PATTERN.findall(log.read_text(errors="replace"))
    return tuple(float(value) for value in matches[-1]) if matches else (math.nan,) * 3  # type: ignore[return-value]


def job_timings(results_dir: str | Path) -> pd.DataFrame:
    """One row per job of a results folder (each `logs/` folder in it, a world's under `worlds:` too)
    that has a benchmark file: `job` is its log's path in the folder, without `.log`."""
    results_dir = Path(results_dir)
    rows = []
    for log in sorted(results_dir.rglob("logs/**/*.log")):
        logs_dir = next(parent for parent in log.parents if parent.name == "logs")
        benchmark = logs_dir.parent / "benchmarks" / log.relative_to(logs_dir).with_suffix(".tsv")
        if not benchmark.is_file():
            continue
        measured = pd.read_csv(benchmark, sep="\t").iloc[-1]
        startup_s, work_s, peak_gpu_mib = _last_timing(log)
        rows.append({
            "job": str(log.relative_to(results_dir).with_suffix("")),
            "wall_s": float(measured["s"]),
            "cpu_s": float(measured["cpu_time"]),
            "max_rss_mb": float(measured["max_rss"]),
            "startup_s": startup_s,
            "work_s": work_s,
            "peak_gpu_mib": peak_gpu_mib,
            "finished": datetime.fromtimestamp(benchmark.stat().st_mtime, UTC).isoformat(timespec="seconds"),
        })
    return pd.DataFrame(rows, columns=TIMING_COLUMNS)


def run_row(timings: pd.DataFrame, started: float, finished: float) -> dict[str, object]:
    """One invocation: its wall time and the jobs that finished during it, summed."""
    ran = timings[pd.to_datetime(timings["finished"]) >= datetime.fromtimestamp(math.floor(started), UTC)]
    return {
        "started": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "wall_s": round(finished - started, 3),
        "jobs": len(ran),
        "job_s": round(ran["wall_s"].sum(), 3),
        "startup_s": round(ran["startup_s"].sum(), 3),
        "work_s": round(ran["work_s"].sum(), 3),
        "peak_gpu_mib": ran["peak_gpu_mib"].max() if ran["peak_gpu_mib"].notna().any() else math.nan,
    }


def write_timings(results_dir: str | Path, started: float, finished: float) -> None:
    """timings.csv for the folder, and the invocation's row appended to runs.csv if it ran any job."""
    results_dir = Path(results_dir)
    timings = job_timings(results_dir)
    timings.to_csv(results_dir / "timings.csv", index=False, float_format="%.3f")
    run = run_row(timings, started, finished)
    if run["jobs"]:
        runs = results_dir / "runs.csv"
        pd.DataFrame([run], columns=RUN_COLUMNS).to_csv(runs, mode="a", header=not runs.exists(), index=False, float_format="%.3f")
