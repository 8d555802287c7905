# Several worlds in one run (config `worlds:`), or replicates of one (config `replicates:`). Each world
# is the whole workflow again, a Snakemake module with its own config (the run's, with the world's keys
# merged in) whose rules write to <results_dir>/<world>/ (<results_dir>/replicates/<replicate>/) and are
# named <world>_<rule>; cross_world_summary sets their summaries and findings side by side, and for
# replicates replicate_tables counts each finding's verdicts. Nothing is shared between worlds: two
# embedded worlds each build their own.
import sys
import time

from crosscoder_interventions.artefacts import check_artefacts
from crosscoder_interventions.config import (
    check_rules_spare,
    ignored_by_git,
    provided_paths,
    resolve_device,
    validate_config,
    world_configs,
    world_group,
    world_sources,
)
from crosscoder_interventions.errors import ConfigError
from crosscoder_interventions.timings import write_timings

SCHEMA = workflow.source_path("../schemas/config.schema.yaml")
try:
    validate_config(config, SCHEMA)
    WORLD_CONFIGS = world_configs(config, SCHEMA)
    _, GROUP = world_group(config)
except ConfigError as error:
    sys.exit(f"error: {error}")
RESULTS = config["results_dir"]
WORLD_RESULTS = [world_config["results_dir"] for world_config in WORLD_CONFIGS.values()]
REPLICATES = bool(config["replicates"])


for world_name, world_config in WORLD_CONFIGS.items():
    rule_prefix = f"{world_name}_"

    module:
        name: world_name
        snakefile: "../../Snakefile"
        config: world_config

    use rule * from world_name exclude all as rule_prefix*


# Each world checked its own rules as it was loaded; a world loaded before another cannot see the other's.
for world_name, world_config in WORLD_CONFIGS.items():
    if world_config["world"] == "external":
        try:
            check_rules_spare(provided_paths(world_sources(world_config)), list(workflow.rules))
        except ConfigError as error:
            sys.exit(f"error: world '{world_name}': {error}")


onstart:
    # A module's own onstart is not run: check every world's artefacts here.
    for world_name, world_config in WORLD_CONFIGS.items():
        try:
            if not workflow.non_local_exec:
                resolve_device(world_config["device"])
            check_artefacts(world_config)
        except ConfigError as error:
            sys.exit(f"error: world '{world_name}': {error}")
    ignored_by_git(RESULTS)


onsuccess:
    # Every world's jobs, under their worlds' folders.
    write_timings(RESULTS, RUN_STARTED, time.time())


rule cross_world_summary:
    input:
        summaries=[f"{world_results}/summary.csv" for world_results in WORLD_RESULTS],
        findings=[f"{world_results}/findings.csv" for world_results in WORLD_RESULTS],
    output:
        summary=report(
            f"{GROUP}/cross_world/summary.csv",
            caption="../report/cross_world_summary.rst",
            category="Worlds",
            labels={"table": "every world's summary"},
        ),
        findings=report(
            f"{GROUP}/cross_world/findings.csv",
            caption="../report/cross_world_findings.rst",
            category="Worlds",
            labels={"table": "every world's findings"},
        ),
        verdicts=report(
            f"{GROUP}/cross_world/verdicts.csv",
            caption="../report/cross_world_verdicts.rst",
            category="Worlds",
            labels={"table": "each finding's verdict per world"},
        ),
    params:
        worlds=list(WORLD_CONFIGS),
        seed=config["seed"],
    threads: 1
    # Measured: reading and writing tables a few MB at most (results/benchmarks/cross_world_summary.tsv).
    resources:
        mem_mb=1000,
        runtime=5,
    log:
        f"{GROUP}/logs/cross_world_summary.log",
    benchmark:
        f"{GROUP}/benchmarks/cross_world_summary.tsv"
    conda:
        "../../envs/environment.yaml"
    script:
        "../scripts/cross_world_summary.py"


rule replicate_tables:
    input:
        findings=[f"{world_results}/findings.csv" for world_results in WORLD_RESULTS],
    output:
        verdicts=report(
            f"{GROUP}/verdicts.csv",
            caption="../report/replicate_verdicts.rst",
            category="Replicates",
            labels={"table": "each replicate's verdicts"},
        ),
        robustness=report(
            f"{GROUP}/robustness.csv",
            caption="../report/replicate_robustness.rst",
            category="Replicates",
            labels={"table": "each finding over the replicates"},
        ),
        figure=report(
            f"{GROUP}/robustness.png",
            caption="../report/replicate_robustness.rst",
            category="Replicates",
            labels={"figure": "each finding over the replicates"},
        ),
    params:
        replicates=list(WORLD_CONFIGS),
        seed=config["seed"],
    threads: 1
    # Like cross_world_summary: small tables and one figure.
    resources:
        mem_mb=1000,
        runtime=5,
    log:
        f"{GROUP}/logs/replicate_tables.log",
    benchmark:
        f"{GROUP}/benchmarks/replicate_tables.tsv"
    conda:
        "../../envs/environment.yaml"
    script:
        "../scripts/replicate_tables.py"


# The cross-world tables (and the replicate tables), each world's report notebook (which needs every
# other output of its world but one) and that one: its tag-reading table.
all_targets = (
    list(rules.cross_world_summary.output)
    + (list(rules.replicate_tables.output) if REPLICATES else [])
    + [f"{world_results}/{target}" for world_results in WORLD_RESULTS for target in ("report_notebook.html", "tag_reading.csv")]
)
