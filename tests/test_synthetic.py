"""The benchmark's random-weight world: the planted feature fires where it is told to, bad shapes are
one-line errors, `snakemake benchmark` runs on the real-shape configuration (at a small size), and a
Llama-shaped world (the 1-2B benchmark's architecture) is built as configured."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from tiny_world import workflow_copy

from crosscoder_interventions.config import check_synthetic
from crosscoder_interventions.dictionary.checkpoints import load_crosscoder
from crosscoder_interventions.errors import ConfigError
from crosscoder_interventions.world.synthetic import OTHER_FIRING, TARGET_FEATURE, build_synthetic_world, place_firing, random_crosscoder

# Whole pipeline runs: left out of the lower-bound run (pyproject.toml's `slow` marker).
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
REAL_SHAPE = REPO / "workflow" / "configs" / "benchmark_real_shape.yaml"


@pytest.mark.parametrize("fraction", [0.0, 0.1, 1.0])
def test_planted_feature_fires_on_the_configured_fraction(fraction):
    crosscoder = random_crosscoder(["a", "b", "c"], d_model=16, n_features=40, seed=1)
    acts_NPD = 3.0 * torch.randn(500, 3, 16, generator=torch.Generator().manual_seed(2))
    place_firing(crosscoder, acts_NPD, fraction)
    fires_NF = crosscoder.encode(acts_NPD) > 0
    assert fires_NF[:, TARGET_FEATURE].sum() == round(fraction * 500)
    others = fires_NF.sum(0)[torch.arange(40) != TARGET_FEATURE]
    assert (others == round(OTHER_FIRING * 500)).all()


def test_bad_synthetic_shapes_are_one_line_errors():
    synthetic = yaml.safe_load(REAL_SHAPE.read_text())["benchmark"]["synthetic"] | {"hookpoints": "auto"}  # the schema's default
    check_synthetic(synthetic, max_new_tokens=48)
    cases = [
        ({"prompt_length": {"min": 50, "max": 40}}, "min 50 exceeds max 40"),
        ({"model": {**synthetic["model"], "num_heads": 7}}, "not a multiple of num_heads 7"),
        ({"prompt_length": {"min": 60, "max": 2040}}, "exceed max_position_embeddings 2048"),
        ({"model": {**synthetic["model"], "num_key_value_heads": 5}}, "num_heads 16 is not a multiple of num_key_value_heads 5"),
        ({"hookpoints": ["blocks.4.hook_resid_post"]}, "benchmark.synthetic.hookpoints: hookpoint 'blocks.4.hook_resid_post' does not exist"),
        ({"model": {**synthetic["model"], "intermediate_size": 4096}}, "intermediate_size shape\\(s\\) only architecture llama"),
    ]
    for change, message in cases:
        with pytest.raises(ConfigError, match=message) as info:
            check_synthetic({**copy.deepcopy(synthetic), **change}, max_new_tokens=48)
        assert "\n" not in str(info.value)


def test_real_shape_benchmark_plans_and_runs_at_a_small_size(tmp_path):
    """The real-shape configuration plans as it is, and runs end to end with a narrow model and few prompts."""
    workdir = workflow_copy(tmp_path / "workflow")
    run = [SNAKEMAKE, "--cores", "2", "benchmark", "--configfile", str(REAL_SHAPE)]
    plan = subprocess.run([*run, "-n"], cwd=workdir, capture_output=True, text=True, timeout=300)
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "benchmark_synthetic_world" in plan.stdout
    small = {
        "device": "cpu",
        "benchmark": {
            "n_prompts": 3, "max_new_tokens": 3, "reference_prompts": 1, "repeats": 1,
            "synthetic": {
                "model": {"num_layers": 4, "hidden_size": 32, "num_heads": 4, "window_size": 8, "max_position_embeddings": 64, "vocab_size": 1000},
                "n_features": 256, "target_fraction": 0.5, "prompt_length": {"min": 6, "max": 12},
            },
        },
    }
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(small))
    result = subprocess.run([*run, str(tmp_path / "small.yaml")], cwd=workdir, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(workdir / "results/benchmark/interventions.csv")
    entries = {"bridge_generate", "hf_generate", "many_layer_ablation", "perturbation_clamping", "reference_perturbation_ablation"}
    assert entries <= set(table["entry"])
    assert (table["target_fraction"] == 0.5).all() and (table["n_features"] == 256).all() and (table["architecture"] == "gpt_neo").all()
    assert (table["n_parameters"] > 1000 * 32).all()
    assert (table["operations_per_token"] > 0).all() and table["host_syncs_per_token"].notna().all()
    assert (workdir / "results/benchmark/interventions.png").stat().st_size > 0
    world = yaml.safe_load((workdir / "results/benchmark/synthetic_world.json").read_text())
    assert world["d_model"] == 32 and world["vocab_size"] == 1000
    assert world["target_fraction_measured"] == pytest.approx(0.5, abs=0.05)


def test_a_llama_shaped_world_has_its_architecture_its_hookpoints_and_its_planted_fraction(tmp_path):
    synthetic = {
        "model": {"architecture": "llama", "num_layers": 4, "hidden_size": 32, "num_heads": 4, "num_key_value_heads": 2,
                  "intermediate_size": 64, "max_position_embeddings": 64, "vocab_size": 1000},
        "hookpoints": ["blocks.1.hook_resid_post", "blocks.3.hook_resid_post"],
        "n_features": 64, "target_fraction": 0.5, "prompt_length": {"min": 6, "max": 12},
    }
    check_synthetic(synthetic, max_new_tokens=4)
    stats = build_synthetic_world(tmp_path, synthetic, n_prompts=4, steer_start_offset=3, device="cpu", seed=0)
    assert stats["architecture"] == "llama" and stats["hookpoints"] == synthetic["hookpoints"]
    assert stats["target_fraction_measured"] == pytest.approx(0.5, abs=0.05)
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert (config["model_type"], config["num_key_value_heads"], config["intermediate_size"], config["vocab_size"]) == ("llama", 2, 64, 1000)
    assert config["rope_parameters"]["rope_theta"] == 500000.0 and config["tie_word_embeddings"]
    assert load_crosscoder(tmp_path / "crosscoder").hookpoints == synthetic["hookpoints"]


def test_the_llama_1b_benchmark_plans_offline_and_counts_its_parameters(tmp_path):
    config = REPO / "workflow" / "configs" / "benchmark_llama_1b.yaml"
    plan = subprocess.run([SNAKEMAKE, "--cores", "2", "benchmark", "-n", "--configfile", str(config)],
                          cwd=workflow_copy(tmp_path), capture_output=True, text=True, timeout=300)
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert "benchmark_synthetic_world" in plan.stdout
    model = yaml.safe_load(config.read_text())["benchmark"]["synthetic"]["model"]
    # Llama-3.2-1B: tied embeddings, grouped-query attention, a gated MLP.
    head_dim = model["hidden_size"] // model["num_heads"]
    attention = 2 * model["hidden_size"] ** 2 + 2 * model["hidden_size"] * model["num_key_value_heads"] * head_dim
    block = attention + 3 * model["hidden_size"] * model["intermediate_size"] + 2 * model["hidden_size"]
    n_parameters = model["vocab_size"] * model["hidden_size"] + model["num_layers"] * block + model["hidden_size"]
    assert 1.2e9 < n_parameters < 1.3e9
