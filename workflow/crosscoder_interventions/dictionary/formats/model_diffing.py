"""The model-diffing library's checkpoint format, the crosscode library's predecessor: its config
and expected keys. Its own module because its keys and config differ from crosscode's although
the files are the same; `crosscode_family` loads it.

`SaveableModule.save` of an `AcausalCrosscoder` with a JumpReLU activation (X = crosscoding_dims =
(n_models, n_hookpoints) = (1, P), H its hidden axis, F here) writes:
- `model.pt`: `W_enc_XDH` (1, P, D, F), `b_enc_H` (F), `W_dec_HXD` (F, 1, P, D), `b_dec_XD`
  (1, P, D), `hidden_activation.log_threshold_H` (F; `..._L` in its last versions),
  `folded_scaling_factors_X` (1, P), `is_folded` (bool scalar).
- `model_cfg.yaml` (`model.cfg` in early versions), written by `yaml.dump`: `crosscoding_dims`
  (a `!!python/tuple`), `d_model`, `hidden_dim`, `hidden_activation_classname`,
  `hidden_activation_cfg: {size, bandwidth}`. It names no hookpoints: they are the residual ones.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from crosscoder_interventions.dictionary.formats.common import CheckpointInfo, cfg_int
from crosscoder_interventions.errors import ConfigError
from crosscoder_interventions.hookpoints import hookpoint_names

MODEL_DIFFING = "model-diffing"
MODEL_DIFFING_JUMPRELU_CLASSNAMES = frozenset({"JumpReLUActivation", "AnthropicJumpReLUActivation", "AnthropicSTEJumpReLUActivation"})
MODEL_DIFFING_THRESHOLD_KEYS = ("hidden_activation.log_threshold_H", "hidden_activation.log_threshold_L")


def model_diffing_keys(threshold_key: str) -> tuple[str, ...]:
    """The state-dict keys that map onto (W_enc, b_enc, W_dec, b_dec, log_threshold, recorded scaling factors)."""
    return ("W_enc_XDH", "b_enc_H", "W_dec_HXD", "b_dec_XD", threshold_key, "folded_scaling_factors_X")


def model_diffing_dims(cfg: dict[str, Any], where: Path) -> tuple[int, ...]:
    """`crosscoding_dims`: (n_models, n_hookpoints) with one model, or (n_hookpoints,)."""
    dims = cfg.get("crosscoding_dims")
    if not (
        isinstance(dims, (list, tuple)) and len(dims) in (1, 2) and all(isinstance(n, int) and n > 0 for n in dims) and math.prod(dims[:-1]) == 1
    ):
        raise ConfigError(
            f"crosscoder config {where} has crosscoding_dims={dims!r}; expected (1, n_hookpoints): "
            "a single-model crosscoder over hookpoints."
        )
    return tuple(dims)


def model_diffing_info(cfg: dict[str, Any], where: Path) -> CheckpointInfo:
    classname = cfg.get("hidden_activation_classname")
    if classname not in MODEL_DIFFING_JUMPRELU_CLASSNAMES:
        raise ConfigError(
            f"crosscoder config {where} has hidden_activation_classname {classname!r}; "
            f"expected one of {sorted(MODEL_DIFFING_JUMPRELU_CLASSNAMES)} (a JumpReLU crosscoder)."
        )
    n_hookpoints = model_diffing_dims(cfg, where)[-1]
    # The library's config names no hookpoints: its acausal crosscoders read the residual stream
    # after the embedding and after every block, as ours do.
    return CheckpointInfo(MODEL_DIFFING, hookpoint_names(n_hookpoints - 1), cfg_int(cfg, "d_model", where), cfg_int(cfg, "hidden_dim", where))


def model_diffing_expected(info: CheckpointInfo, dims: tuple[int, ...], threshold_key: str) -> dict[str, tuple[int, ...]]:
    D, F = info.d_model, info.n_features
    return {
        "W_enc_XDH": (*dims, D, F),
        "b_enc_H": (F,),
        "W_dec_HXD": (F, *dims, D),
        "b_dec_XD": (*dims, D),
        threshold_key: (F,),
        "folded_scaling_factors_X": dims,
        "is_folded": (),
    }
