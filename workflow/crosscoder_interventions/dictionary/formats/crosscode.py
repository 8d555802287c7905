"""The crosscode library's checkpoint format: writing it (`save_crosscode_checkpoint`, the format
the package trains into) and reading its config and expected keys. Its own module because it is the
one format written as well as read; `crosscode_family` loads it.

Shape letters as in `dictionary.model`; in the library's key names L is its latent axis (F here)
and X, Xi, Xo its crosscoding dims (1, P).

`SaveableModule.save` of a `ModelHookpointAcausalCrosscoder` writes:
- `model.pt`: `_W_enc_XiDiL` (1, P, D, F), `b_enc_L` (F), `_W_dec_LXoDo` (F, 1, P, D),
  `_b_dec_XoDo` (1, P, D), `folded_scaling_factors_in_Xi` (1, P), `folded_scaling_factors_out_Xo`
  (1, P), `is_folded` (bool scalar), and `_activation_fn.log_threshold_L` (F) for a JumpReLU.
- `model_cfg.yaml`: `n_models`, `hookpoints` (absent in later versions: then the residual ones),
  `n_hookpoints`, `d_model`, `n_latents`, `activation_fn: {classname, cfg}`, `use_encoder_bias`,
  `use_decoder_bias`, `dtype`. The activations read (the library's `ACTIVATIONS_MAP` names):
  `AnthropicSTEJumpReLUActivation` (or its alias `JumpReLUActivationFunction`; cfg `{size,
  bandwidth}`): JumpReLU; `ReLUActivation` (cfg `{}`): ReLU; `TopkActivation` (cfg `{k}`): the k
  largest pre-activations with no ReLU, `SignedTopK`. `BatchTopkActivation` (cfg `{k_per_example}`)
  keeps the k * batch largest pre-activations of a batch and saves no threshold, at inference too:
  refused, as it has no per-position meaning; so is `GroupMaxActivation`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from crosscoder_interventions.dictionary.formats.common import CheckpointInfo, cfg_int
from crosscoder_interventions.dictionary.model import Activation, Crosscoder, JumpReLU, ReLU, SignedTopK, unfold_scaling
from crosscoder_interventions.errors import ConfigError
from crosscoder_interventions.hookpoints import hookpoint_names

CROSSCODE = "crosscode"
STATE_DICT_FNAME = "model.pt"
MODEL_CFG_FNAME = "model_cfg.yaml"
CFG_FNAMES = (MODEL_CFG_FNAME, "model.cfg")  # the second: early model-diffing versions
ACTIVATION_CLASSNAME = "AnthropicSTEJumpReLUActivation"
# The library's activation classes that the loader reads (ACTIVATIONS_MAP keys; the second JumpReLU
# name is an alias there).
CROSSCODE_ACTIVATIONS = {
    ACTIVATION_CLASSNAME: JumpReLU.name,
    "JumpReLUActivationFunction": JumpReLU.name,
    "ReLUActivation": ReLU.name,
    "TopkActivation": SignedTopK.name,
}
DEFAULT_BANDWIDTH = 2.0
# The state-dict keys that map onto (W_enc, b_enc, W_dec, b_dec, log_threshold, recorded scaling factors).
CROSSCODE_KEYS = ("_W_enc_XiDiL", "b_enc_L", "_W_dec_LXoDo", "_b_dec_XoDo", "_activation_fn.log_threshold_L", "folded_scaling_factors_in_Xi")


def _checked_scaling(scaling_factors_P: torch.Tensor | None, n_hookpoints: int) -> torch.Tensor:
    if scaling_factors_P is None:
        return torch.ones(n_hookpoints)
    scaling_factors_P = torch.as_tensor(scaling_factors_P, dtype=torch.float32).detach().cpu().reshape(-1)
    if scaling_factors_P.shape != (n_hookpoints,) or not bool((scaling_factors_P > 0).all()):
        raise ValueError(f"scaling factors must be {n_hookpoints} positive numbers, got {scaling_factors_P.tolist()}")
    return scaling_factors_P


def save_crosscode_checkpoint(
    crosscoder: Crosscoder,
    directory: str | Path,
    *,
    scaling_factors_P: torch.Tensor | None,
    folded: bool,
    bandwidth: float = DEFAULT_BANDWIDTH,
) -> Path:
    """Write `crosscoder` (on raw activations) as a crosscode-library checkpoint directory.

    `scaling_factors_P` are the per-hookpoint factors s_p the crosscoder was trained with (raw * s);
    None means 1. `folded=True` writes the raw-activation weights with `is_folded` true, as the
    library's trainers save; `folded=False` writes the weights on scaled activations.
    `bandwidth` is the JumpReLU STE bandwidth of training (in scaled units), kept in the yaml.
    """
    if type(crosscoder.activation) is not JumpReLU:
        raise ValueError(f"the crosscode checkpoint format written here holds JumpReLU crosscoders, not {crosscoder.activation.name} ones")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    P, D, F = crosscoder.W_enc_PDF.shape
    s_P = _checked_scaling(scaling_factors_P, P)
    stored = Crosscoder(crosscoder.hookpoints, D, F)
    stored.load_state_dict({k: v.detach().float().cpu() for k, v in crosscoder.state_dict().items()})
    if not folded:
        unfold_scaling(stored, s_P)
    dtype = torch.float32
    state = {
        "_W_enc_XiDiL": stored.W_enc_PDF.detach().reshape(1, P, D, F).clone(),
        "_W_dec_LXoDo": stored.W_dec_FPD.detach().reshape(F, 1, P, D).clone(),
        "b_enc_L": stored.b_enc_F.detach().clone(),
        "_b_dec_XoDo": stored.b_dec_PD.detach().reshape(1, P, D).clone(),
        "folded_scaling_factors_in_Xi": s_P.reshape(1, P).to(dtype).clone(),
        "folded_scaling_factors_out_Xo": s_P.reshape(1, P).to(dtype).clone(),
        "is_folded": torch.tensor(bool(folded), dtype=torch.bool),
        "_activation_fn.log_threshold_L": stored.log_threshold_F.detach().clone(),
    }
    torch.save(state, directory / STATE_DICT_FNAME)
    cfg = {
        "n_models": 1,
        "hookpoints": list(crosscoder.hookpoints),
        "n_hookpoints": P,
        "d_model": D,
        "n_latents": F,
        "activation_fn": {"classname": ACTIVATION_CLASSNAME, "cfg": {"size": F, "bandwidth": float(bandwidth)}},
        "use_encoder_bias": True,
        "use_decoder_bias": True,
        "dtype": "float32",
    }
    with open(directory / MODEL_CFG_FNAME, "w") as handle:
        yaml.safe_dump(cfg, handle, sort_keys=False)
    return directory


def crosscode_activation(cfg: dict[str, Any], where: Path) -> Activation:
    activation = cfg.get("activation_fn")
    classname = activation.get("classname") if isinstance(activation, dict) else activation
    if classname == "BatchTopkActivation":
        raise ConfigError(
            f"crosscoder config {where} has activation_fn BatchTopkActivation, which keeps the largest pre-activations of a whole batch "
            "and saves no inference threshold, so a position's features depend on its batch and interventions have no per-position "
            "meaning; use a TopK, ReLU or JumpReLU crosscoder (e.g. this one with per-feature thresholds calibrated on your data)."
        )
    name = CROSSCODE_ACTIVATIONS.get(classname) if isinstance(classname, str) else None
    if name is None:
        raise ConfigError(f"crosscoder config {where} has activation_fn {classname!r}; only {', '.join(CROSSCODE_ACTIVATIONS)} crosscoders are read.")
    if name == SignedTopK.name:
        activation_cfg = activation.get("cfg") if isinstance(activation, dict) else None
        return SignedTopK(cfg_int(activation_cfg if isinstance(activation_cfg, dict) else {}, "k", where))
    return ReLU() if name == ReLU.name else JumpReLU()


def crosscode_info(cfg: dict[str, Any], where: Path) -> CheckpointInfo:
    n_models = cfg.get("n_models", 1)
    if n_models != 1:
        raise ConfigError(f"crosscoder config {where} has n_models={n_models!r}; only single-model (n_models: 1) crosscoders are supported.")
    activation = crosscode_activation(cfg, where)
    D = cfg_int(cfg, "d_model", where)
    F = cfg_int(cfg, "n_latents", where)
    hookpoints = cfg.get("hookpoints")
    if hookpoints is None and "n_hookpoints" in cfg:
        hookpoints = hookpoint_names(cfg_int(cfg, "n_hookpoints", where) - 1)
    if not isinstance(hookpoints, list) or not hookpoints or not all(isinstance(h, str) for h in hookpoints):
        raise ConfigError(f"crosscoder config {where} has hookpoints={hookpoints!r}; expected a list of hookpoint names.")
    if "n_hookpoints" in cfg and cfg["n_hookpoints"] != len(hookpoints):
        raise ConfigError(f"crosscoder config {where} lists {len(hookpoints)} hookpoints but n_hookpoints={cfg['n_hookpoints']!r}.")
    return CheckpointInfo(CROSSCODE, list(hookpoints), D, F, activation.name)


def crosscode_expected(info: CheckpointInfo, cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    P, D, F = len(info.hookpoints), info.d_model, info.n_features
    expected = {
        "_W_enc_XiDiL": (1, P, D, F),
        "_W_dec_LXoDo": (F, 1, P, D),
        "folded_scaling_factors_in_Xi": (1, P),
        "folded_scaling_factors_out_Xo": (1, P),
        "is_folded": (),
    }
    if info.activation == JumpReLU.name:
        expected["_activation_fn.log_threshold_L"] = (F,)
    if cfg.get("use_encoder_bias", True) is not False:
        expected["b_enc_L"] = (F,)
    if cfg.get("use_decoder_bias", True) is not False:
        expected["_b_dec_XoDo"] = (1, P, D)
    return expected
