"""Checkpoints of crosscoders and SAEs, read into a `Crosscoder` on raw activations: the public entry
points, which tell a checkpoint directory's format apart by its files and hand it to that format's
module under `dictionary/formats/`, where each format's files, keys and shapes are described.

Checkpoints are directories in the format of one of four libraries: the crosscode library and its
predecessor model-diffing (`model.pt` and `model_cfg.yaml`, told apart by their keys), dictionary_learning
(`ae.pt` and `config.json`) and SAELens (`sae_weights.safetensors` and `cfg.json`). Weights are always
read with `torch.load(weights_only=True)` or safetensors; configs are read as data, never run.
"""

from __future__ import annotations

from pathlib import Path

import torch

from crosscoder_interventions.dictionary.formats.common import CheckpointInfo, read_json, read_state
from crosscoder_interventions.dictionary.formats.crosscode import CFG_FNAMES, CROSSCODE, STATE_DICT_FNAME, save_crosscode_checkpoint
from crosscoder_interventions.dictionary.formats.crosscode_family import crosscode_family_crosscoder, crosscode_family_info, read_cfg
from crosscoder_interventions.dictionary.formats.dictionary_learning import (
    DICTIONARY_LEARNING,
    DL_CFG_FNAME,
    DL_CODE_NORMALISATIONS,
    DL_WEIGHTS_FNAME,
    dictionary_learning_crosscoder,
    dictionary_learning_info,
)
from crosscoder_interventions.dictionary.formats.saelens import SAELENS, SAELENS_CFG_FNAME, SAELENS_WEIGHTS_FNAME, saelens_crosscoder, saelens_info
from crosscoder_interventions.dictionary.model import Crosscoder, fold_mean, fold_scaling
from crosscoder_interventions.dictionary.normalisation import read_normalisation
from crosscoder_interventions.errors import ConfigError
from crosscoder_interventions.runtime import DTYPES

__all__ = [
    "DL_CODE_NORMALISATIONS",
    "CheckpointInfo",
    "checkpoint_info",
    "load_crosscoder",
    "read_normalisation",
    "save_crosscode_checkpoint",
]


def _cfg_path(directory: Path) -> Path | None:
    return next((directory / name for name in CFG_FNAMES if (directory / name).is_file()), None)


def _checkpoint_files(path: str | Path) -> tuple[str, Path, Path]:
    """The library family (crosscode for crosscode and model-diffing, dictionary_learning, saelens), the
    weights and the config file of a checkpoint directory, after checking both are there."""
    directory = Path(path)
    for family, weights, cfg in ((DICTIONARY_LEARNING, DL_WEIGHTS_FNAME, DL_CFG_FNAME), (SAELENS, SAELENS_WEIGHTS_FNAME, SAELENS_CFG_FNAME)):
        if (directory / cfg).is_file() or (directory / weights).is_file():
            if not (directory / cfg).is_file() or not (directory / weights).is_file():
                raise ConfigError(
                    f"{family} checkpoint '{directory}' needs both {weights} and {cfg}; copy the missing file from where the dictionary was saved."
                )
            return family, directory / weights, directory / cfg
    expected = (
        f"a checkpoint directory: crosscode or model-diffing ({STATE_DICT_FNAME} and {' or '.join(CFG_FNAMES)}), "
        f"dictionary_learning ({DL_WEIGHTS_FNAME} and {DL_CFG_FNAME}) or SAELens ({SAELENS_WEIGHTS_FNAME} and {SAELENS_CFG_FNAME})"
    )
    if not directory.is_dir():
        raise ConfigError(f"crosscoder checkpoint '{directory}' is not a directory; expected {expected}.")
    cfg_path = _cfg_path(directory)
    missing_files = [
        name for name, present in ((STATE_DICT_FNAME, (directory / STATE_DICT_FNAME).is_file()), (CFG_FNAMES[0], cfg_path is not None)) if not present
    ]
    if missing_files or cfg_path is None:  # a missing config is in missing_files: `is None` only narrows the type
        raise ConfigError(f"crosscoder checkpoint '{directory}' lacks {' and '.join(missing_files)}; expected {expected}.")
    return CROSSCODE, directory / STATE_DICT_FNAME, cfg_path


def checkpoint_info(path: str | Path) -> CheckpointInfo:
    """The hookpoints, width and feature count of a checkpoint directory, from its config (and, for
    dictionary_learning, whose config lacks the layer count, the weights' shapes, memory-mapped);
    cheap enough for start-up checks."""
    family, state_path, cfg_path = _checkpoint_files(path)
    if family == DICTIONARY_LEARNING:
        return dictionary_learning_info(read_state(state_path, mmap=True), state_path, cfg_path)
    if family == SAELENS:
        return saelens_info(read_json(cfg_path), cfg_path)
    return crosscode_family_info(read_cfg(cfg_path), cfg_path)


def load_crosscoder(
    path: str | Path,
    *,
    normalisation: str | Path | None = None,
    dtype: str = "float32",
    device: str | torch.device = "cpu",
) -> Crosscoder:
    """A `Crosscoder` on raw activations (parameters frozen) from a checkpoint directory of any format
    `dictionary/formats/` reads.

    Folded crosscode and model-diffing checkpoints (what their trainers save) are taken as they are.
    For unfolded ones the scaling factors s are folded in: those of the `normalisation` file if given,
    else the values the checkpoint records when they are all positive, else none (a warning is
    logged). dictionary_learning and SAELens weights get the file's scaling factors, if any. A mean in
    the `normalisation` file is folded in last, so that the result reads raw activations x where the
    checkpoint read s * (x - mean).
    """
    family, state_path, cfg_path = _checkpoint_files(path)
    if family == CROSSCODE:
        crosscoder, scaling_P, mean_PD = crosscode_family_crosscoder(path, state_path, cfg_path, normalisation)
    else:
        crosscoder = (dictionary_learning_crosscoder if family == DICTIONARY_LEARNING else saelens_crosscoder)(state_path, cfg_path)
        scaling_P, mean_PD = (
            read_normalisation(normalisation, crosscoder.n_hookpoints, crosscoder.d_model) if normalisation is not None else (None, None)
        )
    if scaling_P is not None:
        fold_scaling(crosscoder, scaling_P)
    if mean_PD is not None:
        fold_mean(crosscoder, mean_PD)
    # Infinite log thresholds are exact: -inf a threshold of 0, +inf a feature that never fires.
    non_finite = [
        name
        for name, tensor in crosscoder.state_dict().items()
        if bool((torch.isnan(tensor) if name == "log_threshold_F" else ~torch.isfinite(tensor)).any())
    ]
    if non_finite:
        raise ConfigError(
            f"crosscoder checkpoint '{path}' has NaN or infinite values in {', '.join(non_finite)}; "
            "the checkpoint is damaged or its training diverged: use a sound checkpoint."
        )
    return crosscoder.requires_grad_(False).to(device=device, dtype=DTYPES[dtype])
