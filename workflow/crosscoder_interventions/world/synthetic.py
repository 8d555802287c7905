"""A world of random weights for timing the intervention engine without the hub (`benchmark.synthetic`).

A GPT-Neo or Llama of a configured shape (workflow/configs/benchmark_real_shape.yaml gives
TinyStories-Instruct-33M's, workflow/configs/benchmark_llama_1b.yaml Llama-3.2-1B's), a crosscoder
of a configured width on its residual hookpoints, and random prompts.
The engine's cost depends on where the target feature fires (zero decisions cost nothing), so one
planted target feature fires on a configured fraction of the prompts' positions: 0 is the best case,
1 the worst. Random weights generate meaningless text, which timing does not care about.

Shape letters: N positions, P hookpoints, D d_model, F features.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from crosscoder_interventions.dictionary.checkpoints import save_crosscode_checkpoint
from crosscoder_interventions.dictionary.model import Crosscoder
from crosscoder_interventions.engine.generation import generate
from crosscoder_interventions.engine.interventions import Plain
from crosscoder_interventions.hookpoints import resolve_hookpoints
from crosscoder_interventions.models import load_model
from crosscoder_interventions.runtime import hf_model_of
from crosscoder_interventions.world.corpus import generate_corpus
from crosscoder_interventions.world.lm_training import build_model
from crosscoder_interventions.world.tokenizer import train_tokenizer

TARGET_FEATURE = 0
THRESHOLD = 1.0  # every feature's JumpReLU threshold; the encoder biases decide where features fire
OTHER_FIRING = 0.01  # the fraction of prompt positions on which each other feature fires
# Only the pad id (end-of-text) is ever looked up: prompts are random ids from the model's vocabulary.
TOKENIZER_VOCAB = 512
TOKENIZER_TEXTS = 200
PROMPT_ENDING = 1  # tokens of the marker steering starts before, as "Story:" ends a real prompt


def random_prompts(
    n_prompts: int, min_length: int, max_length: int, vocab_size: int, steer_start_offset: int, seed: int
) -> tuple[list[list[int]], list[int]]:
    """Prompts of random token ids and lengths, and where steering starts in each (as in
    experiment.tokenise_prompts, `steer_start_offset` tokens before a one-token closing marker)."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_length, max_length + 1, (n_prompts,), generator=generator).tolist()
    prompts = [torch.randint(0, vocab_size, (length,), generator=generator).tolist() for length in lengths]
    starts = [max(0, length - PROMPT_ENDING - steer_start_offset) for length in lengths]
    return prompts, starts


def random_crosscoder(hookpoints: list[str], d_model: int, n_features: int, seed: int) -> Crosscoder:
    """Gaussian encoder, unit-norm decoder rows per hookpoint, zero biases, threshold THRESHOLD."""
    generator = torch.Generator().manual_seed(seed)
    n_hookpoints = len(hookpoints)
    crosscoder = Crosscoder(hookpoints, d_model, n_features)
    with torch.no_grad():
        crosscoder.W_enc_PDF.copy_(torch.randn(n_hookpoints, d_model, n_features, generator=generator) / math.sqrt(n_hookpoints * d_model))
        W_dec_FPD = torch.randn(n_features, n_hookpoints, d_model, generator=generator)
        crosscoder.W_dec_FPD.copy_(W_dec_FPD / W_dec_FPD.norm(dim=-1, keepdim=True))
        crosscoder.log_threshold_F.fill_(math.log(THRESHOLD))
    return crosscoder.requires_grad_(False)


def firing_cut_F(h_NF: torch.Tensor, fraction: float) -> torch.Tensor:
    """Per column, a value that exactly round(fraction * N) of its N entries exceed."""
    n_positions = h_NF.shape[0]
    n_firing = round(fraction * n_positions)
    if n_firing == 0:
        return h_NF.amax(0) + 1.0
    if n_firing == n_positions:
        return h_NF.amin(0) - 1.0
    below_F = h_NF.kthvalue(n_positions - n_firing, dim=0).values
    above_F = h_NF.kthvalue(n_positions - n_firing + 1, dim=0).values
    return (below_F + above_F) / 2


@torch.no_grad()
def place_firing(crosscoder: Crosscoder, acts_NPD: torch.Tensor, target_fraction: float) -> None:
    """Encoder biases such that, on acts_NPD, TARGET_FEATURE fires on `target_fraction` of the
    positions and every other feature on OTHER_FIRING of them (in place): f fires where h > THRESHOLD."""
    h_NF = crosscoder.encode_pre(acts_NPD) - crosscoder.b_enc_F
    cut_F = firing_cut_F(h_NF, OTHER_FIRING)
    cut_F[TARGET_FEATURE] = firing_cut_F(h_NF[:, TARGET_FEATURE : TARGET_FEATURE + 1], target_fraction)[0]
    crosscoder.b_enc_F.copy_(THRESHOLD - cut_F)


def synthetic_model(model: dict[str, Any], tokenizer: PreTrainedTokenizerBase, seed: int) -> PreTrainedModel:
    """A randomly initialised model of the configured shape (`benchmark.synthetic.model`)."""
    if model.get("architecture", "gpt_neo") == "gpt_neo":
        return build_model({key: value for key, value in model.items() if key != "architecture"}, tokenizer, seed)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=model["vocab_size"],
        hidden_size=model["hidden_size"],
        intermediate_size=model.get("intermediate_size", 4 * model["hidden_size"]),
        num_hidden_layers=model["num_layers"],
        num_attention_heads=model["num_heads"],
        num_key_value_heads=model.get("num_key_value_heads", model["num_heads"]),
        max_position_embeddings=model["max_position_embeddings"],
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def build_synthetic_world(
    directory: str | Path, synthetic: dict[str, Any], *, n_prompts: int, steer_start_offset: int, device: str, seed: int
) -> dict[str, Any]:
    """Write model/ (a Hugging Face directory with a tokenizer), crosscoder/ (a crosscode checkpoint),
    prompts.json (token lists and steering starts) and selected.csv (the target feature, to ablate and
    to steer) under `directory`; return what was built, with the target's measured firing fraction."""
    directory = Path(directory)
    tokenizer = train_tokenizer(generate_corpus(TOKENIZER_TEXTS, 0.3, seed)["text"], TOKENIZER_VOCAB)
    model = synthetic_model(synthetic["model"], tokenizer, seed)
    model.save_pretrained(directory / "model")
    tokenizer.save_pretrained(directory / "model")
    del model
    bridge = load_model(str(directory / "model"), device=device)
    config = hf_model_of(bridge).config
    n_layers, d_model = bridge.cfg.n_layers, bridge.cfg.d_model
    prompts, starts = random_prompts(
        n_prompts, synthetic["prompt_length"]["min"], synthetic["prompt_length"]["max"], config.vocab_size, steer_start_offset, seed
    )
    hookpoints = resolve_hookpoints(synthetic["hookpoints"], n_layers)
    crosscoder = random_crosscoder(hookpoints, d_model, synthetic["n_features"], seed).to(device)
    plain = generate(bridge, crosscoder, prompts, [Plain()], max_new_tokens=1, record_activations=True, progress=False)
    assert plain.activations is not None  # record_activations=True
    # With one new token the recorded positions are exactly the prompt's.
    acts_NPD = torch.cat(plain.activations[0])
    place_firing(crosscoder, acts_NPD, synthetic["target_fraction"])
    save_crosscode_checkpoint(crosscoder, directory / "crosscoder", scaling_factors_P=None, folded=True)
    (directory / "prompts.json").write_text(json.dumps({"prompts": prompts, "starts": starts}))
    selected = pd.DataFrame({"feature": [TARGET_FEATURE] * 2, "role": ["ablate", "steer"], "reason": ["planted"] * 2})
    selected.to_csv(directory / "selected.csv", index=False)
    return {
        "architecture": type(config).model_type,
        "n_layers": n_layers,
        "d_model": d_model,
        "hookpoints": hookpoints,
        "vocab_size": config.vocab_size,
        "n_features": synthetic["n_features"],
        "n_positions": len(acts_NPD),
        "target_fraction": synthetic["target_fraction"],
        "target_fraction_measured": float((crosscoder.encode(acts_NPD)[:, TARGET_FEATURE] > 0).float().mean()),
    }


def read_synthetic_prompts(directory: str | Path) -> tuple[list[list[int]], list[int]]:
    saved = json.loads((Path(directory) / "prompts.json").read_text())
    return saved["prompts"], saved["starts"]

