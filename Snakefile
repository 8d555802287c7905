# Crosscoder feature ablation and steering experiments. The rules live in workflow/rules/;
# common.smk validates the config and checks every input before any job starts.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/world.smk"
include: "workflow/rules/discovery.smk"


rule all:
    input:
        all_targets,
    default_target: True
