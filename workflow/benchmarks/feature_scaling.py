"""How a run's cost grows with the number of ablated features: the scaling benchmark.

For each count N, a fresh copy of the workflow, given a built world (results/world of a finished
run, dated now so that Snakemake keeps it), runs the whole analysis with the top N ablated features
of that run's candidates (`features: auto`'s ranking, tag features first) and no steered one. The
passes over the dataset and the un-intervened baselines are shared by every feature; each feature
adds its own generation, scoring and figure jobs. One row per N: the run's wall time and its jobs'
summed time and peak memory (Snakemake's benchmark files), split into shared and per-feature jobs.

    .venv/bin/python workflow/benchmarks/feature_scaling.py --run . --counts 1 16 \\
        --configfile workflow/configs/feature_scaling.yaml --out results/benchmark/feature_scaling.csv

Not a rule: it runs the workflow. Run it from a checkout nobody edits meanwhile (each count copies
the workflow when it starts), on a machine with nothing else to do.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from crosscoder_interventions.analysis.discovery import select_features

REPOSITORY = Path(__file__).resolve().parents[2]
CHECKOUT = ("Snakefile", "config.yaml", "workflow", "envs", "profiles")


def ablated_features(candidates: pd.DataFrame, count: int) -> list[int]:
    """The first `count` features `features: auto` would ablate with n_auto = count (tag features first)."""
    selected = select_features(candidates, "auto", n_features=len(candidates), n_auto=count)
    ablate = selected.loc[selected["role"] == "ablate", "feature"].tolist()
    if len(ablate) < count:
        raise SystemExit(f"error: the run's candidates give only {len(ablate)} features to ablate, fewer than {count}.")
    return [int(feature) for feature in ablate[:count]]


def job_costs(benchmarks: Path) -> pd.DataFrame:
    """Every analysis job's benchmark file (the world's excluded): its time, peak memory and whether it is per feature."""
    rows = []
    for path in sorted(benchmarks.rglob("*.tsv")):
        relative = path.relative_to(benchmarks)
        if relative.parts[0] == "world":
            continue
        record = pd.read_csv(path, sep="\t").iloc[0]
        rows.append({"job": str(relative), "s": float(record["s"]), "max_rss_mb": float(record["max_rss"]),
                     "per_feature": "feature_" in relative.name})
    return pd.DataFrame(rows, columns=["job", "s", "max_rss_mb", "per_feature"])


def copy_workflow(directory: Path) -> None:
    """What a new user checks out (Snakefile, config, workflow, envs, the profiles link), copied into `directory`."""
    for item in CHECKOUT:
        source = REPOSITORY / item
        if source.is_symlink():
            (directory / item).symlink_to(source.readlink())
        elif source.is_dir():
            shutil.copytree(source, directory / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, directory / item)


def checkout(directory: Path, world: Path) -> None:
    """A fresh copy of the workflow beside a copy of the built world, the world dated after the scripts."""
    copy_workflow(directory)
    shutil.copytree(world, directory / "results" / "world")
    now = time.time()
    for path in [directory / "results" / "world", *(directory / "results" / "world").rglob("*")]:
        os.utime(path, (now, now))


def measure(count: int, features: list[int], world: Path, configfiles: list[Path], cores: int, scratch: Path) -> dict:
    directory = scratch / f"ablate_{count}"
    directory.mkdir()
    checkout(directory, world)
    features_file = directory / "features.yaml"
    features_file.write_text(f"features: {{ablate: {features}, steer: []}}\n")
    command = [str(Path(sys.executable).with_name("snakemake")), "--cores", str(cores), "--configfile",
               *[str(path.resolve()) for path in configfiles], str(features_file)]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=directory, capture_output=True, text=True)
    wall_s = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"error: the run with {count} features failed; its output ends:\n{result.stderr[-3000:]}")
    jobs = job_costs(directory / "results" / "benchmarks")
    shared, per_feature = jobs[~jobs["per_feature"]], jobs[jobs["per_feature"]]
    return {
        "n_features": count, "wall_s": round(wall_s, 1), "n_jobs": len(jobs),
        "job_s": round(jobs["s"].sum(), 1), "shared_job_s": round(shared["s"].sum(), 1),
        "per_feature_job_s": round(per_feature["s"].sum(), 1), "max_rss_mb": round(jobs["max_rss_mb"].max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished run's directory (its results/world and results/features/candidates.csv)")
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--configfile", type=Path, nargs="*", default=[], help="configs for every run (merged over config.yaml)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    world, candidates_file = args.run / "results" / "world", args.run / "results" / "features" / "candidates.csv"
    for needed in (world, candidates_file):
        if not needed.exists():
            raise SystemExit(f"error: {needed} does not exist; give --run the directory of a finished run.")
    for configfile in args.configfile:
        if not configfile.is_file():
            raise SystemExit(f"error: config file {configfile} does not exist; give an existing --configfile.")
    candidates = pd.read_csv(candidates_file)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPOSITORY, capture_output=True, text=True).stdout.strip()
    rows = []
    with tempfile.TemporaryDirectory(prefix="feature_scaling_") as scratch:
        for count in args.counts:
            started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
            row = measure(count, ablated_features(candidates, count), world, args.configfile, args.cores, Path(scratch)) | {"measured": started}
            print(row, flush=True)
            rows.append(row)
    table = pd.DataFrame(rows)
    one = table.loc[table["n_features"] == table["n_features"].min()].iloc[0]
    # Against running the smallest count's analysis once per feature: below 1 when the shared passes are shared.
    table["wall_vs_separate_runs"] = (table["wall_s"] / (table["n_features"] / one["n_features"] * one["wall_s"])).round(3)
    table["measured"] = table.pop("measured")  # when each count's run started, after the measurements
    table["machine"] = f"{platform.machine()}, {os.cpu_count()} cores, --cores {args.cores}"
    table["commit"] = commit
    table["configfiles"] = " ".join(str(path) for path in args.configfile) or "config.yaml"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
