"""Loading a checkpoint directory of the `model.pt` + `model_cfg.yaml` layout that the crosscode
library and its predecessor model-diffing share: reading the YAML config as data, telling the two
formats apart, and the scaling factors to fold in. Separate from `crosscode` and `model_diffing`,
which each describe one library's keys and config.

Both libraries train on activations scaled per hookpoint, x_scaled_p = s_p * x_p. "Folded"
(`is_folded` true, what both libraries' trainers save) means s has been folded into the weights, which
then act on raw activations: W_enc[p] <- s_p W_enc[p], W_dec[:, p] <- W_dec[:, p] / s_p,
b_dec[p] <- b_dec[p] / s_p (b_enc and the threshold are unchanged), and s is recorded in the
`folded_scaling_factors_*` buffers. Unfolded (`is_folded` false) weights act on scaled activations; the
libraries then leave the buffers at zero, while `save_crosscode_checkpoint` records s there anyway
(the library ignores them until it folds), so that `load_crosscoder` can fold it. Factors and a
per-hookpoint mean that a checkpoint does not carry (a crosscoder trained on s_p * (x_p - mu_p)) come
from a separate normalisation file, folded in at load time (`read_normalisation`, `fold_mean`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import yaml

from crosscoder_interventions.dictionary.formats.common import CheckpointInfo, check_state, read_state
from crosscoder_interventions.dictionary.formats.crosscode import CROSSCODE, CROSSCODE_KEYS, crosscode_activation, crosscode_expected, crosscode_info
from crosscoder_interventions.dictionary.formats.model_diffing import (
    MODEL_DIFFING,
    MODEL_DIFFING_THRESHOLD_KEYS,
    model_diffing_dims,
    model_diffing_expected,
    model_diffing_info,
    model_diffing_keys,
)
from crosscoder_interventions.dictionary.model import Crosscoder, JumpReLU
from crosscoder_interventions.dictionary.normalisation import read_normalisation
from crosscoder_interventions.errors import ConfigError

log = logging.getLogger("crosscoder_interventions")

# What the format's keys (CROSSCODE_KEYS, model_diffing_keys) map onto, in their order.
_ROLES = ("W_enc", "b_enc", "W_dec", "b_dec", "log_threshold", "recorded")


class _CfgLoader(yaml.SafeLoader):
    """Safe YAML plus the two Python tags a library config may carry, read as plain data, never run:
    `!!python/tuple` (as the libraries' own loaders do) and `!!python/name:...` (e.g. a torch dtype)."""


def _construct_tuple(loader: _CfgLoader, node: yaml.SequenceNode) -> tuple[Any, ...]:
    return tuple(loader.construct_sequence(node))


_CfgLoader.add_constructor("tag:yaml.org,2002:python/tuple", _construct_tuple)
_CfgLoader.add_multi_constructor("tag:yaml.org,2002:python/name:", lambda loader, suffix, node: suffix)


def read_cfg(cfg_path: Path) -> dict[str, Any]:
    try:
        with open(cfg_path) as handle:
            cfg = yaml.load(handle, Loader=_CfgLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        raise ConfigError(
            f"crosscoder config {cfg_path} is not plain YAML ({type(error).__name__}); "
            f"expected the model config a crosscode or model-diffing checkpoint is saved with."
        ) from error
    if not isinstance(cfg, dict):
        raise ConfigError(f"crosscoder config {cfg_path} is not a mapping; expected the model config of a crosscode or model-diffing checkpoint.")
    return cfg


def crosscode_family_info(cfg: dict[str, Any], cfg_path: Path) -> CheckpointInfo:
    """The info of a crosscode or model-diffing config, told apart by its keys."""
    if "n_latents" in cfg:
        return crosscode_info(cfg, cfg_path)
    if "hidden_dim" in cfg:
        return model_diffing_info(cfg, cfg_path)
    raise ConfigError(
        f"crosscoder config {cfg_path} has neither n_latents (crosscode) nor hidden_dim (model-diffing); "
        "expected the model config the checkpoint was saved with."
    )


def _neither_format_error(state_path: Path, keys: list[str]) -> ConfigError:
    return ConfigError(
        f"crosscoder weights {state_path} are in neither known checkpoint format (keys {keys}); "
        f"a crosscode checkpoint has the keys {sorted(CROSSCODE_KEYS + ('folded_scaling_factors_out_Xo', 'is_folded'))}, "
        f"a model-diffing checkpoint has the keys {sorted(model_diffing_keys(MODEL_DIFFING_THRESHOLD_KEYS[0]) + ('is_folded',))}."
    )


def _cfg_of_format(weights_format: str, state_path: Path, cfg_path: Path) -> tuple[dict[str, Any], CheckpointInfo]:
    """The config and its info, checked to be of the format the weights' keys show."""
    cfg = read_cfg(cfg_path)
    info = crosscode_family_info(cfg, cfg_path)
    if info.format != weights_format:
        raise ConfigError(
            f"crosscoder weights {state_path} are in the {weights_format} format but {cfg_path} is a {info.format} config; save the checkpoint again."
        )
    return cfg, info


def crosscode_family_crosscoder(
    path: str | Path, state_path: Path, cfg_path: Path, normalisation: str | Path | None
) -> tuple[Crosscoder, torch.Tensor | None, torch.Tensor | None]:
    """A crosscode or model-diffing checkpoint (told apart by the state dict's keys), with the scaling
    factors still to fold in (None for a folded one) and the normalisation file's mean."""
    state = read_state(state_path)
    if "_W_enc_XiDiL" in state:
        cfg, info = _cfg_of_format(CROSSCODE, state_path, cfg_path)
        activation = crosscode_activation(cfg, cfg_path)
        expected = crosscode_expected(info, cfg)
        names = dict(zip(_ROLES, CROSSCODE_KEYS))
    elif "W_enc_XDH" in state:
        cfg, info = _cfg_of_format(MODEL_DIFFING, state_path, cfg_path)
        # The JumpReLU's threshold was `log_threshold_H` and later `log_threshold_L`.
        threshold_key = next((key for key in MODEL_DIFFING_THRESHOLD_KEYS if key in state), MODEL_DIFFING_THRESHOLD_KEYS[0])
        activation = JumpReLU()
        expected = model_diffing_expected(info, model_diffing_dims(cfg, cfg_path), threshold_key)
        names = dict(zip(_ROLES, model_diffing_keys(threshold_key)))
    else:
        raise _neither_format_error(state_path, sorted(state))
    check_state(state, expected, state_path, cfg_path, info)

    P, D, F = len(info.hookpoints), info.d_model, info.n_features
    crosscoder = Crosscoder(info.hookpoints, D, F, activation=activation)
    with torch.no_grad():
        crosscoder.W_enc_PDF.copy_(state[names["W_enc"]].reshape(P, D, F).float())
        crosscoder.W_dec_FPD.copy_(state[names["W_dec"]].reshape(F, P, D).float())
        if names["log_threshold"] in expected:  # a JumpReLU's
            crosscoder.log_threshold_F.copy_(state[names["log_threshold"]].float())
        if names["b_enc"] in state:
            crosscoder.b_enc_F.copy_(state[names["b_enc"]].float())
        if names["b_dec"] in state:
            crosscoder.b_dec_PD.copy_(state[names["b_dec"]].reshape(P, D).float())

    scaling_P, mean_PD = read_normalisation(normalisation, P, D) if normalisation is not None else (None, None)
    recorded_P = state[names["recorded"]].reshape(P).float()
    if bool(state["is_folded"]):
        if scaling_P is not None and not torch.allclose(scaling_P, recorded_P, rtol=1e-4):
            raise ConfigError(
                f"crosscoder checkpoint '{path}' already has scaling factors {recorded_P.tolist()} folded in, but the normalisation file "
                f"'{normalisation}' gives {scaling_P.tolist()}; remove scaling_factors from that file."
            )
    else:
        if scaling_P is None:
            if bool((recorded_P > 0).all()) and bool(torch.isfinite(recorded_P).all()):
                scaling_P = recorded_P
            else:
                log.warning(
                    "unfolded crosscoder checkpoint %s records no scaling factors and no normalisation file gives them; "
                    "assuming it was trained on raw activations",
                    path,
                )
        return crosscoder, scaling_P, mean_PD
    return crosscoder, None, mean_PD
