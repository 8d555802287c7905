#!/usr/bin/env bash
# Snakemake runs this inside the new conda environment, from the workflow's working directory
# (the repository root).
set -euo pipefail
python -m pip install -r envs/requirements.txt
python -m pip install --no-deps -e .
