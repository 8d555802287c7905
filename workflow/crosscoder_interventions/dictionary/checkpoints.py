"""Checkpoint formats of crosscoders and SAEs, read into a `Crosscoder` on raw activations.

Shape letters as in `dictionary.model`; L a library's layer axis (its hookpoints).

Checkpoints are directories in the format of one of four libraries, told apart by their files (and,
for the first two, which share them, by the state dict's keys). Weights are always read with
`torch.load(weights_only=True)` or safetensors; configs are read as data, never run.

The crosscode library (`SaveableModule.save` of a `ModelHookpointAcausalCrosscoder`):
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

Its predecessor, the model-diffing library (`SaveableModule.save` of an `AcausalCrosscoder` with a
JumpReLU activation; X = crosscoding_dims = (n_models, n_hookpoints) = (1, P)):
- `model.pt`: `W_enc_XDH` (1, P, D, F), `b_enc_H` (F), `W_dec_HXD` (F, 1, P, D), `b_dec_XD`
  (1, P, D), `hidden_activation.log_threshold_H` (F; `..._L` in its last versions),
  `folded_scaling_factors_X` (1, P), `is_folded` (bool scalar).
- `model_cfg.yaml` (`model.cfg` in early versions), written by `yaml.dump`: `crosscoding_dims`
  (a `!!python/tuple`), `d_model`, `hidden_dim`, `hidden_activation_classname`,
  `hidden_activation_cfg: {size, bandwidth}`. It names no hookpoints: they are the residual ones.

Both libraries train on activations scaled per hookpoint, x_scaled_p = s_p * x_p. "Folded"
(`is_folded` true, what both libraries' trainers save) means s has been folded into the weights, which
then act on raw activations: W_enc[p] <- s_p W_enc[p], W_dec[:, p] <- W_dec[:, p] / s_p,
b_dec[p] <- b_dec[p] / s_p (b_enc and the threshold are unchanged), and s is recorded in the
`folded_scaling_factors_*` buffers. Unfolded (`is_folded` false) weights act on scaled activations; the
libraries then leave the buffers at zero, while `save_crosscode_checkpoint` records s there anyway
(the library ignores them until it folds), so that `load_crosscoder` can fold it. Factors and a
per-hookpoint mean that a checkpoint does not carry (a crosscoder trained on s_p * (x_p - mu_p)) come
from a separate normalisation file, folded in at load time (`read_normalisation`, `fold_mean`).

dictionary_learning (saprmarks/dictionary_learning and its crosscoder fork: `CrossCoder`, a ReLU, and
`BatchTopKCrossCoder`), the state dict of the dictionary and the trainer's config:
- `ae.pt`: `encoder.weight` (L, D, F), `encoder.bias` (F), `decoder.weight` (L, F, D),
  `decoder.bias` (L, D); a BatchTopKCrossCoder adds the buffers `k` (its training L0) and
  `threshold` (a number; -1 until training sets it) and, in later versions, `code_normalization_id`.
- `config.json`: `{"trainer": {"dict_class", "activation_dim", "dict_size", "k", ...}}`. It names no
  hookpoints: the L layers are taken to be the residual hookpoints, as for model-diffing.
At inference a BatchTopKCrossCoder keeps f_i = relu(h_i) where relu(h_i) * n_i > threshold, n_i
its code normalisation (CROSSCODER, the default: sum_l ||W_dec[l, i]||; SAE: the norm of W_dec[:, i]
over all layers; NONE: 1), so the loader stores the per-feature threshold threshold / n_i (before any
folding, in the units the library saw). Its weights act on activations as the library read them:
raw, or as given by a normalisation file.

SAELens (a single-layer SAE, one hookpoint: the SAE's `hook_name`):
- `sae_weights.safetensors`: `W_enc` (D, F), `b_enc` (F), `W_dec` (F, D), `b_dec` (D), and
  `threshold` (F) for a JumpReLU SAE.
- `cfg.json`: `architecture` (standard: ReLU; jumprelu: relu(h) * [h > threshold]; topk: the k largest
  of h, then relu; absent in old versions: standard), `d_in`, `d_sae`, `hook_name`,
  `apply_b_dec_to_input` (h = (x - b_dec) W_enc + b_enc, folded into b_enc; SAELens's default true),
  `normalize_activations` (only none is read), `k` or `activation_fn_kwargs.k` (topk).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from crosscoder_interventions.dictionary.model import (
    Activation,
    BatchTopK,
    Crosscoder,
    JumpReLU,
    ReLU,
    SignedTopK,
    TopK,
    fold_mean,
    fold_scaling,
    unfold_scaling,
)
from crosscoder_interventions.errors import ConfigError
from crosscoder_interventions.hookpoints import hookpoint_names
from crosscoder_interventions.runtime import DTYPES

log = logging.getLogger("crosscoder_interventions")

STATE_DICT_FNAME = "model.pt"
MODEL_CFG_FNAME = "model_cfg.yaml"
CFG_FNAMES = (MODEL_CFG_FNAME, "model.cfg")  # the second: early model-diffing versions
CROSSCODE, MODEL_DIFFING, DICTIONARY_LEARNING, SAELENS = "crosscode", "model-diffing", "dictionary_learning", "saelens"
DL_WEIGHTS_FNAME, DL_CFG_FNAME = "ae.pt", "config.json"
SAELENS_WEIGHTS_FNAME, SAELENS_CFG_FNAME = "sae_weights.safetensors", "cfg.json"
# dictionary_learning's CodeNormalization ids (the enum's auto() values) that the loader reads.
DL_CODE_NORMALISATIONS = {"CROSSCODER": 1, "SAE": 2, "NONE": 4}
MODEL_DIFFING_JUMPRELU_CLASSNAMES = frozenset({"JumpReLUActivation", "AnthropicJumpReLUActivation", "AnthropicSTEJumpReLUActivation"})
MODEL_DIFFING_THRESHOLD_KEYS = ("hidden_activation.log_threshold_H", "hidden_activation.log_threshold_L")
CROSSCODER_CLASSNAME = "ModelHookpointAcausalCrosscoder"
ACTIVATION_CLASSNAME = "AnthropicSTEJumpReLUActivation"
# The crosscode library's activation classes that the loader reads (ACTIVATIONS_MAP keys; the second
# JumpReLU name is an alias there).
CROSSCODE_ACTIVATIONS = {
    ACTIVATION_CLASSNAME: JumpReLU.name,
    "JumpReLUActivationFunction": JumpReLU.name,
    "ReLUActivation": ReLU.name,
    "TopkActivation": SignedTopK.name,
}
DEFAULT_BANDWIDTH = 2.0



def _checked_scaling(scaling_factors_P: torch.Tensor | None, n_hookpoints: int) -> torch.Tensor:
    if scaling_factors_P is None:
        return torch.ones(n_hookpoints)
    scaling_factors_P = torch.as_tensor(scaling_factors_P, dtype=torch.float32).detach().cpu().reshape(-1)
    if scaling_factors_P.shape != (n_hookpoints,) or not bool((scaling_factors_P > 0).all()):
        raise ValueError(f"scaling factors must be {n_hookpoints} positive numbers, got {scaling_factors_P.tolist()}")
    return scaling_factors_P


# --- saving -------------------------------------------------------------------------------------


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


# --- loading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint's config says about it: enough for start-up checks, without reading weights."""

    format: str
    hookpoints: list[str]
    d_model: int
    n_features: int
    activation: str = JumpReLU.name


def _cfg_int(cfg: dict[str, Any], key: str, where: Path) -> int:
    value = cfg.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"crosscoder config {where} has {key}={value!r}; expected a positive integer.")
    return value


class _CfgLoader(yaml.SafeLoader):
    """Safe YAML plus the two Python tags a library config may carry, read as plain data, never run:
    `!!python/tuple` (as the libraries' own loaders do) and `!!python/name:...` (e.g. a torch dtype)."""


def _construct_tuple(loader: _CfgLoader, node: yaml.SequenceNode) -> tuple[Any, ...]:
    return tuple(loader.construct_sequence(node))


_CfgLoader.add_constructor("tag:yaml.org,2002:python/tuple", _construct_tuple)
_CfgLoader.add_multi_constructor("tag:yaml.org,2002:python/name:", lambda loader, suffix, node: suffix)


def _cfg_path(directory: Path) -> Path | None:
    return next((directory / name for name in CFG_FNAMES if (directory / name).is_file()), None)


def _read_cfg(cfg_path: Path) -> dict[str, Any]:
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


def _crosscode_activation(cfg: dict[str, Any], where: Path) -> Activation:
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
        return SignedTopK(_cfg_int(activation_cfg if isinstance(activation_cfg, dict) else {}, "k", where))
    return ReLU() if name == ReLU.name else JumpReLU()


def _crosscode_info(cfg: dict[str, Any], where: Path) -> CheckpointInfo:
    n_models = cfg.get("n_models", 1)
    if n_models != 1:
        raise ConfigError(f"crosscoder config {where} has n_models={n_models!r}; only single-model (n_models: 1) crosscoders are supported.")
    activation = _crosscode_activation(cfg, where)
    D = _cfg_int(cfg, "d_model", where)
    F = _cfg_int(cfg, "n_latents", where)
    hookpoints = cfg.get("hookpoints")
    if hookpoints is None and "n_hookpoints" in cfg:
        hookpoints = hookpoint_names(_cfg_int(cfg, "n_hookpoints", where) - 1)
    if not isinstance(hookpoints, list) or not hookpoints or not all(isinstance(h, str) for h in hookpoints):
        raise ConfigError(f"crosscoder config {where} has hookpoints={hookpoints!r}; expected a list of hookpoint names.")
    if "n_hookpoints" in cfg and cfg["n_hookpoints"] != len(hookpoints):
        raise ConfigError(f"crosscoder config {where} lists {len(hookpoints)} hookpoints but n_hookpoints={cfg['n_hookpoints']!r}.")
    return CheckpointInfo(CROSSCODE, list(hookpoints), D, F, activation.name)


def _model_diffing_dims(cfg: dict[str, Any], where: Path) -> tuple[int, ...]:
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


def _model_diffing_info(cfg: dict[str, Any], where: Path) -> CheckpointInfo:
    classname = cfg.get("hidden_activation_classname")
    if classname not in MODEL_DIFFING_JUMPRELU_CLASSNAMES:
        raise ConfigError(
            f"crosscoder config {where} has hidden_activation_classname {classname!r}; "
            f"expected one of {sorted(MODEL_DIFFING_JUMPRELU_CLASSNAMES)} (a JumpReLU crosscoder)."
        )
    n_hookpoints = _model_diffing_dims(cfg, where)[-1]
    # The library's config names no hookpoints: its acausal crosscoders read the residual stream
    # after the embedding and after every block, as ours do.
    return CheckpointInfo(MODEL_DIFFING, hookpoint_names(n_hookpoints - 1), _cfg_int(cfg, "d_model", where), _cfg_int(cfg, "hidden_dim", where))


def checkpoint_info(path: str | Path) -> CheckpointInfo:
    """The hookpoints, width and feature count of a checkpoint directory, from its config (and, for
    dictionary_learning, whose config lacks the layer count, the weights' shapes, memory-mapped);
    cheap enough for start-up checks."""
    family, state_path, cfg_path = _checkpoint_files(path)
    if family == DICTIONARY_LEARNING:
        return _dictionary_learning_info(_read_state(state_path, mmap=True), state_path, cfg_path)
    if family == SAELENS:
        return _saelens_info(_read_json(cfg_path), cfg_path)
    cfg = _read_cfg(cfg_path)
    if "n_latents" in cfg:
        return _crosscode_info(cfg, cfg_path)
    if "hidden_dim" in cfg:
        return _model_diffing_info(cfg, cfg_path)
    raise ConfigError(
        f"crosscoder config {cfg_path} has neither n_latents (crosscode) nor hidden_dim (model-diffing); "
        "expected the model config the checkpoint was saved with."
    )


def _crosscode_expected(info: CheckpointInfo, cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
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


def _model_diffing_expected(info: CheckpointInfo, dims: tuple[int, ...], threshold_key: str) -> dict[str, tuple[int, ...]]:
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


# Per format, the state-dict keys that map onto (W_enc, b_enc, W_dec, b_dec, log_threshold, recorded scaling factors).
_CROSSCODE_KEYS = ("_W_enc_XiDiL", "b_enc_L", "_W_dec_LXoDo", "_b_dec_XoDo", "_activation_fn.log_threshold_L", "folded_scaling_factors_in_Xi")


def _neither_format_error(state_path: Path, keys: list[str]) -> ConfigError:
    return ConfigError(
        f"crosscoder weights {state_path} are in neither known checkpoint format (keys {keys}); "
        f"a crosscode checkpoint has the keys {sorted(_CROSSCODE_KEYS + ('folded_scaling_factors_out_Xo', 'is_folded'))}, "
        f"a model-diffing checkpoint has the keys "
        f"{sorted(['W_enc_XDH', 'b_enc_H', 'W_dec_HXD', 'b_dec_XD', 'hidden_activation.log_threshold_H', 'folded_scaling_factors_X', 'is_folded'])}."
    )


def _read_state(state_path: Path, *, mmap: bool = False) -> dict[str, Any]:
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


def _read_json(cfg_path: Path) -> dict[str, Any]:
    try:
        cfg = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"dictionary config {cfg_path} is not JSON ({error}); expected the config the library saved with the weights.") from error
    if not isinstance(cfg, dict):
        raise ConfigError(f"dictionary config {cfg_path} is not a JSON object; expected the config the library saved with the weights.")
    return cfg


# --- dictionary_learning --------------------------------------------------------------------------


def _dictionary_learning_trainer(cfg: dict[str, Any], where: Path) -> tuple[dict[str, Any], Activation]:
    """The trainer section of a dictionary_learning config and the activation its dict_class means
    (BatchTopK's k is filled in from the weights)."""
    trainer = cfg.get("trainer")
    if not isinstance(trainer, dict):
        raise ConfigError(
            f"dictionary_learning config {where} has no 'trainer' section; expected the config.json trainSAE writes next to {DL_WEIGHTS_FNAME}."
        )
    activations: dict[str, Activation] = {"CrossCoder": ReLU(), "BatchTopKCrossCoder": BatchTopK()}
    dict_class = trainer.get("dict_class")
    if dict_class not in activations:
        raise ConfigError(f"dictionary_learning config {where} has dict_class {dict_class!r}; only {' and '.join(activations)} checkpoints are read.")
    return trainer, activations[dict_class]


def _dictionary_learning_info(state: dict[str, Any], state_path: Path, cfg_path: Path) -> CheckpointInfo:
    trainer, activation = _dictionary_learning_trainer(_read_json(cfg_path), cfg_path)
    encoder = state.get("encoder.weight")
    if not isinstance(encoder, torch.Tensor) or encoder.ndim != 3:
        got = tuple(encoder.shape) if isinstance(encoder, torch.Tensor) else encoder
        raise ConfigError(
            f"dictionary_learning weights {state_path}: 'encoder.weight' is {got}; expected a (layers, activation_dim, dict_size) tensor."
        )
    n_layers = encoder.shape[0]
    hookpoints = hookpoint_names(n_layers - 1)
    return CheckpointInfo(
        DICTIONARY_LEARNING, hookpoints, _cfg_int(trainer, "activation_dim", cfg_path), _cfg_int(trainer, "dict_size", cfg_path), activation.name
    )


def _dictionary_learning_code_norms_F(state: dict[str, Any], trainer: dict[str, Any], state_path: Path) -> torch.Tensor:
    """n_i, the factor BatchTopK's threshold compares relu(h_i) * n_i with (see the module docstring)."""
    ids = {value: name for name, value in DL_CODE_NORMALISATIONS.items()}
    if "code_normalization_id" in state:
        name = ids.get(int(state["code_normalization_id"]), f"id {int(state['code_normalization_id'])}")
    else:
        name = str(trainer.get("code_normalization", "CROSSCODER")).upper()
    W_dec_LFD = state["decoder.weight"].float()
    if name == "CROSSCODER":
        return W_dec_LFD.norm(dim=-1).sum(0)
    if name == "SAE":
        return W_dec_LFD.square().sum((0, 2)).sqrt()
    if name == "NONE":
        return torch.ones(W_dec_LFD.shape[1])
    raise ConfigError(
        f"dictionary_learning weights {state_path} use code normalisation {name}; only {', '.join(DL_CODE_NORMALISATIONS)} "
        "(one threshold per feature) are read."
    )


def _dictionary_learning_crosscoder(state_path: Path, cfg_path: Path) -> Crosscoder:
    state = _read_state(state_path)
    info = _dictionary_learning_info(state, state_path, cfg_path)
    trainer, activation = _dictionary_learning_trainer(_read_json(cfg_path), cfg_path)
    P, D, F = len(info.hookpoints), info.d_model, info.n_features
    expected = {"encoder.weight": (P, D, F), "encoder.bias": (F,), "decoder.weight": (P, F, D), "decoder.bias": (P, D)}
    if isinstance(activation, BatchTopK):
        expected |= {"k": (), "threshold": ()}
        if "code_normalization_id" in state:
            expected["code_normalization_id"] = ()
    _check_state(state, expected, state_path, cfg_path, info)
    log_threshold_F = torch.zeros(F)
    if isinstance(activation, BatchTopK):
        threshold = float(state["threshold"])
        if not threshold >= 0:
            raise ConfigError(
                f"dictionary_learning weights {state_path}: 'threshold' is {threshold}, never set in training (it is from step "
                "threshold_start_step on); use a checkpoint saved after that step."
            )
        activation = BatchTopK(k=int(state["k"]))
        # threshold 0 is log -inf (a ReLU), a feature with no decoder log +inf (never on): both exact.
        log_threshold_F = (threshold / _dictionary_learning_code_norms_F(state, trainer, state_path)).log()
    crosscoder = Crosscoder(info.hookpoints, D, F, activation=activation)
    with torch.no_grad():
        crosscoder.W_enc_PDF.copy_(state["encoder.weight"].float())
        crosscoder.b_enc_F.copy_(state["encoder.bias"].float())
        crosscoder.W_dec_FPD.copy_(state["decoder.weight"].float().permute(1, 0, 2))
        crosscoder.b_dec_PD.copy_(state["decoder.bias"].float())
        crosscoder.log_threshold_F.copy_(log_threshold_F)
    return crosscoder


# --- SAELens --------------------------------------------------------------------------------------


def _saelens_activation(cfg: dict[str, Any], where: Path) -> Activation:
    architecture = cfg.get("architecture", "standard")
    if architecture == "standard":
        return ReLU()
    if architecture == "jumprelu":
        return JumpReLU()
    if architecture == "topk":
        kwargs = cfg.get("activation_fn_kwargs")
        k = cfg.get("k", kwargs.get("k") if isinstance(kwargs, dict) else None)
        return TopK(_cfg_int({"k": k}, "k", where))
    raise ConfigError(f"SAELens config {where} has architecture {architecture!r}; only standard, jumprelu and topk SAEs are read.")


def _saelens_info(cfg: dict[str, Any], where: Path) -> CheckpointInfo:
    hook_name = cfg.get("hook_name")
    if not isinstance(hook_name, str) or not hook_name:
        raise ConfigError(f"SAELens config {where} has hook_name={hook_name!r}; expected the hookpoint the SAE reads, e.g. blocks.3.hook_resid_post.")
    if cfg.get("normalize_activations", "none") not in (None, "none"):
        raise ConfigError(
            f"SAELens config {where} has normalize_activations={cfg['normalize_activations']!r}; only SAEs on un-normalised "
            "activations are read (give the scaling in a normalisation file and set it to none)."
        )
    if cfg.get("hook_head_index") is not None:
        raise ConfigError(f"SAELens config {where} has hook_head_index={cfg['hook_head_index']!r}; only SAEs on whole hookpoints are read.")
    activation = _saelens_activation(cfg, where)
    return CheckpointInfo(SAELENS, [hook_name], _cfg_int(cfg, "d_in", where), _cfg_int(cfg, "d_sae", where), activation.name)


def _saelens_crosscoder(state_path: Path, cfg_path: Path) -> Crosscoder:
    cfg = _read_json(cfg_path)
    info = _saelens_info(cfg, cfg_path)
    activation = _saelens_activation(cfg, cfg_path)
    D, F = info.d_model, info.n_features
    expected = {"W_enc": (D, F), "b_enc": (F,), "W_dec": (F, D), "b_dec": (D,)}
    if isinstance(activation, JumpReLU):
        expected["threshold"] = (F,)
    state = _read_state(state_path)
    _check_state(state, expected, state_path, cfg_path, info)
    crosscoder = Crosscoder(info.hookpoints, D, F, activation=activation)
    W_enc_DF, b_dec_D = state["W_enc"].float(), state["b_dec"].float()
    with torch.no_grad():
        crosscoder.W_enc_PDF.copy_(W_enc_DF[None])
        # h = (x - b_dec) W_enc + b_enc where the SAE subtracts its decoder bias from its input.
        crosscoder.b_enc_F.copy_(state["b_enc"].float() - (b_dec_D @ W_enc_DF if cfg.get("apply_b_dec_to_input", True) else 0.0))
        crosscoder.W_dec_FPD.copy_(state["W_dec"].float()[:, None])
        crosscoder.b_dec_PD.copy_(b_dec_D[None])
        if isinstance(activation, JumpReLU):
            # relu(h) * [h > threshold]: a threshold at or below 0 is a ReLU, log threshold -inf.
            crosscoder.log_threshold_F.copy_(state["threshold"].float().clamp_min(0.0).log())
    return crosscoder


def _check_state(state: dict[str, Any], expected: dict[str, tuple[int, ...]], state_path: Path, cfg_path: Path, info: CheckpointInfo) -> None:
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


def load_crosscoder(
    path: str | Path,
    *,
    normalisation: str | Path | None = None,
    dtype: str = "float32",
    device: str | torch.device = "cpu",
) -> Crosscoder:
    """A `Crosscoder` on raw activations (parameters frozen) from a checkpoint directory of any format of
    the module docstring.

    Folded crosscode and model-diffing checkpoints (what their trainers save) are taken as they are.
    For unfolded ones the scaling factors s are folded in: those of the `normalisation` file if given,
    else the values the checkpoint records when they are all positive, else none (a warning is
    logged). dictionary_learning and SAELens weights get the file's scaling factors, if any. A mean in
    the `normalisation` file is folded in last, so that the result reads raw activations x where the
    checkpoint read s * (x - mean).
    """
    family, state_path, cfg_path = _checkpoint_files(path)
    if family == CROSSCODE:
        crosscoder, scaling_P, mean_PD = _crosscode_family_crosscoder(path, state_path, cfg_path, normalisation)
    else:
        crosscoder = (_dictionary_learning_crosscoder if family == DICTIONARY_LEARNING else _saelens_crosscoder)(state_path, cfg_path)
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


def _crosscode_family_crosscoder(
    path: str | Path, state_path: Path, cfg_path: Path, normalisation: str | Path | None
) -> tuple[Crosscoder, torch.Tensor | None, torch.Tensor | None]:
    """A crosscode or model-diffing checkpoint (told apart by the state dict's keys), with the scaling
    factors still to fold in (None for a folded one) and the normalisation file's mean."""
    state = _read_state(state_path)
    if "_W_enc_XiDiL" in state:
        info = checkpoint_info(path)
        if info.format != CROSSCODE:
            raise ConfigError(
                f"crosscoder weights {state_path} are in the crosscode format but {cfg_path} is a {info.format} config; save the checkpoint again."
            )
        cfg = _read_cfg(cfg_path)
        activation = _crosscode_activation(cfg, cfg_path)
        expected = _crosscode_expected(info, cfg)
        names = dict(zip(("W_enc", "b_enc", "W_dec", "b_dec", "log_threshold", "recorded"), _CROSSCODE_KEYS))
    elif "W_enc_XDH" in state:
        info = checkpoint_info(path)
        if info.format != MODEL_DIFFING:
            raise ConfigError(
                f"crosscoder weights {state_path} are in the model-diffing format but {cfg_path} is a {info.format} config; "
                "save the checkpoint again."
            )
        # The JumpReLU's threshold was `log_threshold_H` and later `log_threshold_L`.
        threshold_key = next((key for key in MODEL_DIFFING_THRESHOLD_KEYS if key in state), MODEL_DIFFING_THRESHOLD_KEYS[0])
        activation = JumpReLU()
        expected = _model_diffing_expected(info, _model_diffing_dims(_read_cfg(cfg_path), cfg_path), threshold_key)
        names = dict(
            zip(
                ("W_enc", "b_enc", "W_dec", "b_dec", "log_threshold", "recorded"),
                ("W_enc_XDH", "b_enc_H", "W_dec_HXD", "b_dec_XD", threshold_key, "folded_scaling_factors_X"),
            )
        )
    else:
        raise _neither_format_error(state_path, sorted(state))
    _check_state(state, expected, state_path, cfg_path, info)

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

