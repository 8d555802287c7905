"""A real SLURM cluster of one node, this machine, for the tests that run the workflow through the SLURM
profile: workflow/profiles/slurm/single-node-cluster.sh starts it (installing SLURM and munge with apt where
they are missing). Where it cannot start (not root, or no SLURM and no apt) the tests that need it are
skipped with the reason, unless REQUIRE_SLURM=1 (CI), where they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "workflow" / "profiles" / "slurm" / "single-node-cluster.sh"
# The SLURM profile as a user runs it, with this cluster's partition in place of partitions.yaml. The
# cluster has no accounting database, so job states come from squeue; its jobs are short, so Snakemake
# asks after them every two seconds from the start, not after 40.
SLURM_ARGS = ("--workflow-profile", "workflow/profiles/slurm", "--slurm-partition-config", "workflow/profiles/slurm/single-node.yaml",
              "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2")


def running() -> bool:
    if shutil.which("sinfo") is None:
        return False
    states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    return states.returncode == 0 and bool({"idle", "mixed", "allocated"} & set(states.stdout.split()))


def _cannot_start() -> str | None:
    if os.geteuid() != 0:
        return "a single-node SLURM cluster needs root to start"
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "SLURM is not installed and there is no apt-get to install it"
    return None


@contextmanager
def single_node_cluster() -> Iterator[None]:
    """The cluster, running for the duration; stopped afterwards if this started it."""
    if running():
        yield
        return
    reason = _cannot_start()
    if reason is not None:
        (pytest.fail if os.environ.get("REQUIRE_SLURM") == "1" else pytest.skip)(reason)
    started = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, timeout=600)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield
    finally:
        subprocess.run([str(SCRIPT), "stop"], capture_output=True, timeout=120)


def job_states(job_ids: list[str]) -> dict[str, str]:
    """Each SLURM job's state as squeue knows it (finished jobs stay listed for the cluster's MinJobAge)."""
    listed = subprocess.run(["squeue", "-h", "--states=all", "-o", "%i %T", "-j", ",".join(job_ids)], capture_output=True, text=True, timeout=30)
    return dict(line.split() for line in listed.stdout.splitlines())
