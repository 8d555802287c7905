"""Reading a normalisation file: the per-hookpoint scaling factors and means a crosscoder was trained
with when its checkpoint does not carry them. Separate from the checkpoint formats because it is a
file of its own, given beside a checkpoint of any format.

Shape letters as in `dictionary.model`.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from crosscoder_interventions.errors import ConfigError


def read_normalisation(path: str | Path, n_hookpoints: int, d_model: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Per-hookpoint scaling factors s (P) and means mu (P, D) from a .safetensors or .pt file with the
    keys `scaling_factors` and/or `mean` (a leading model dimension of 1 is allowed): the crosscoder was
    trained on s_p * (x_p - mu_p)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"crosscoder normalisation file '{path}' does not exist; "
            "give the file of scaling factors and means the crosscoder was trained with, or null."
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(path)
        else:
            tensors = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt files of many kinds: report them as one line
        raise ConfigError(
            f"crosscoder normalisation file '{path}' cannot be read ({type(error).__name__}: {error}); give a .safetensors or .pt file."
        ) from error
    known = {"scaling_factors": (n_hookpoints,), "mean": (n_hookpoints, d_model)}
    if not isinstance(tensors, dict) or not set(tensors) & set(known) or set(tensors) - set(known):
        found = sorted(tensors) if isinstance(tensors, dict) else type(tensors).__name__
        raise ConfigError(
            f"crosscoder normalisation file '{path}' holds {found}; "
            f"expected the keys scaling_factors ({n_hookpoints},) and/or mean ({n_hookpoints}, {d_model})."
        )
    values: dict[str, torch.Tensor | None] = {}
    for key, shape in known.items():
        tensor = tensors.get(key)
        if tensor is not None:
            if not isinstance(tensor, torch.Tensor) or tensor.numel() != math.prod(shape) or tensor.shape[-len(shape):] != shape:
                got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
                raise ConfigError(f"crosscoder normalisation file '{path}': '{key}' has shape {got}; expected {shape}.")
            tensor = tensor.reshape(shape).float()
            if not bool(torch.isfinite(tensor).all()) or (key == "scaling_factors" and not bool((tensor > 0).all())):
                raise ConfigError(
                    f"crosscoder normalisation file '{path}': '{key}' has non-finite{' or non-positive' if key == 'scaling_factors' else ''} values."
                )
        values[key] = tensor
    return values["scaling_factors"], values["mean"]
