# Crosscoder feature ablation and steering experiments. The rules live in workflow/rules/;
# common.smk validates the config and checks every input before any job starts.
import os
import sys
import time

from snakemake.utils import min_version, update_config

from crosscoder_interventions.config import read_config_file, seeds_from_command_line
from crosscoder_interventions.errors import ConfigError

min_version("9.0")

# When this invocation started, for results/runs.csv (crosscoder_interventions.timings).
RUN_STARTED = time.time()

# What `snakemake --report` opens with: what was run and how to read the report.
report: "workflow/report/workflow.rst"

# Rule scripts inherit this: with OpenMP's default busy-waiting, torch on a loaded 2-core machine
# runs 10-20 times slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


# config.yaml is read here rather than by `configfile:`, so that a syntax error in it names its line;
# --configfile and --config values, already in `config`, take precedence over it.
try:
    merged = read_config_file("config.yaml")
except ConfigError as error:
    sys.exit(f"error: {error}")
update_config(merged, config)
config.clear()
config.update(merged)
seeds_from_command_line(config)


if config.get("worlds") or config.get("replicates"):
    # Several worlds (or replicates of one) in one run: each is this Snakefile again, with its own config
    # and results folder.

    include: "workflow/rules/worlds.smk"

else:

    include: "workflow/rules/common.smk"

    # An external world's artefacts belong to the user: no rule may be able to write them.
    if config["world"] == "embedded":

        include: "workflow/rules/world.smk"

    include: "workflow/rules/discovery.smk"
    include: "workflow/rules/generation.smk"
    include: "workflow/rules/scoring.smk"
    include: "workflow/rules/report.smk"
    include: "workflow/rules/benchmark.smk"

    check_provided_inputs()


rule all:
    input:
        all_targets,
    default_target: True
