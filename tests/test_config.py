from pathlib import Path

import pytest
import yaml

from crosscoder_interventions.config import check_startup, validate_config
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
