"""What the checkpoint format modules share: the `CheckpointInfo` a config gives, reading weights
as a plain state dict (`torch.load(weights_only=True)` or safetensors, never unpickling code),
reading a JSON config, and checking a state dict's keys and shapes against those a config implies.

Shape letters as in `dictionary.model`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from crosscoder_interventions.dictionary.model import JumpReLU
from crosscoder_interventions.errors import ConfigError


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint's config says about it: enough for start-up checks, without reading weights."""

    format: str
    hookpoints: list[str]
    d_model: int
    n_features: int
    activation: str = JumpReLU.name


def cfg_int(cfg: dict[str, Any], key: str, where: Path) -> int:
    value = cfg.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"crosscoder config {where} has {key}={value!r}; expected a positive integer.")
    return value


def read_state(state_path: Path, *, mmap: bool = False) -> dict[str, Any]:
    try:
        if state_path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(state_path)
        else:
            state = torch.load(state_path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:  # pickle errors of many kinds: report them as one line
        raise ConfigError(f"crosscoder weights {state_path} cannot be read as a plain state dict ({type(error).__name__}: {error}).") from error
    if not isinstance(state, dict):
        raise ConfigError(f"crosscoder weights {state_path} are not a state dict; expected the state dict the library saves there.")
    return state


def read_json(cfg_path: Path) -> dict[str, Any]:
    try:
        cfg = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"dictionary config {cfg_path} is not JSON ({error}); expected the config the library saved with the weights.") from error
    if not isinstance(cfg, dict):
        raise ConfigError(f"dictionary config {cfg_path} is not a JSON object; expected the config the library saved with the weights.")
    return cfg


def check_state(state: dict[str, Any], expected: dict[str, tuple[int, ...]], state_path: Path, cfg_path: Path, info: CheckpointInfo) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ConfigError(
            f"crosscoder weights {state_path} do not match {cfg_path} ({info.format} format): missing keys {missing}, "
            f"unexpected keys {unexpected}; expected exactly {sorted(expected)}."
        )
    for key, shape in expected.items():
        if not isinstance(state[key], torch.Tensor) or tuple(state[key].shape) != shape:
            got = tuple(state[key].shape) if isinstance(state[key], torch.Tensor) else type(state[key]).__name__
            raise ConfigError(
                f"crosscoder weights {state_path}: '{key}' has shape {got}; expected {shape} "
                f"(P={len(info.hookpoints)}, D={info.d_model}, F={info.n_features})."
            )
