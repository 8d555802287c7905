"""A tiny random GPT-Neo, tokenizer and crosscoder for tests.

Shape letters: P hookpoints, D d_model, F features.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from crosscoder_interventions.crosscoder import Crosscoder
from crosscoder_interventions.lm_training import build_model
from crosscoder_interventions.models import hookpoint_names, load_model
from crosscoder_interventions.tokenizer import train_tokenizer

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
    model = build_model(architecture, tokenizer, seed)
    # Larger than default init weights so that small perturbations visibly change greedy tokens.
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 2:
                parameter.normal_(0.0, 0.15)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def random_crosscoder(n_layers: int, d_model: int, n_features: int = 24, seed: int = 0) -> Crosscoder:
    """Random weights with low thresholds (exp(-3)), so that features fire often."""
    generator = torch.Generator().manual_seed(seed)
    crosscoder = Crosscoder(hookpoint_names(n_layers), d_model, n_features)
    n_hookpoints = n_layers + 1
    with torch.no_grad():
        crosscoder.W_enc_PDF.copy_(torch.randn(n_hookpoints, d_model, n_features, generator=generator) / d_model)
        crosscoder.W_dec_FPD.copy_(torch.randn(n_features, n_hookpoints, d_model, generator=generator))
        crosscoder.b_enc_F.copy_(0.1 * torch.randn(n_features, generator=generator))
        crosscoder.log_threshold_F.fill_(-3.0)
    return crosscoder


def load_tiny(directory: Path):
    return load_model(str(directory))
