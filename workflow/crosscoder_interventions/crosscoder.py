"""The acausal many-layer JumpReLU crosscoder (DESIGN.md section 2) and its checkpoint format.

Shape letters used in names throughout the package:
    B batch (token positions, flattened), S sequence position, N all harvested positions,
    P hookpoints, D d_model, F features (latents), M models (always 1 here).

A `Crosscoder` always works on RAW hookpoint activations x_p(t):
    h(t)     = sum_p x_p(t) @ W_enc[p] + b_enc                 W_enc_PDF (P, D, F), b_enc_F (F)
    f(t)     = h(t) * [h(t) > exp(log_threshold)]             log_threshold_F (F)
    xhat_p(t) = f(t) @ W_dec[:, p] + b_dec[p]                  W_dec_FPD (F, P, D), b_dec_PD (P, D)

Checkpoints are directories in the format of one of two libraries, told apart by the state dict's
keys; `model.pt` is always loaded with `torch.load(weights_only=True)`.

The crosscode library (`SaveableModule.save` of a `ModelHookpointAcausalCrosscoder` with an
`AnthropicSTEJumpReLUActivation`):
- `model.pt`: `_W_enc_XiDiL` (1, P, D, F), `b_enc_L` (F), `_W_dec_LXoDo` (F, 1, P, D),
  `_b_dec_XoDo` (1, P, D), `_activation_fn.log_threshold_L` (F), `folded_scaling_factors_in_Xi`
  (1, P), `folded_scaling_factors_out_Xo` (1, P), `is_folded` (bool scalar).
- `model_cfg.yaml`: `n_models`, `hookpoints`, `n_hookpoints`, `d_model`, `n_latents`,
  `activation_fn: {classname: AnthropicSTEJumpReLUActivation, cfg: {size, bandwidth}}`,
  `use_encoder_bias`, `use_decoder_bias`, `dtype`.

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
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from crosscoder_interventions.errors import ConfigError
from crosscoder_interventions.hookpoints import hookpoint_names

log = logging.getLogger("crosscoder_interventions")

STATE_DICT_FNAME = "model.pt"
MODEL_CFG_FNAME = "model_cfg.yaml"
CFG_FNAMES = (MODEL_CFG_FNAME, "model.cfg")  # the second: early model-diffing versions
CROSSCODE, MODEL_DIFFING = "crosscode", "model-diffing"
MODEL_DIFFING_JUMPRELU_CLASSNAMES = frozenset({"JumpReLUActivation", "AnthropicJumpReLUActivation", "AnthropicSTEJumpReLUActivation"})
MODEL_DIFFING_THRESHOLD_KEYS = ("hidden_activation.log_threshold_H", "hidden_activation.log_threshold_L")
CROSSCODER_CLASSNAME = "ModelHookpointAcausalCrosscoder"
ACTIVATION_CLASSNAME = "AnthropicSTEJumpReLUActivation"
DEFAULT_BANDWIDTH = 2.0
DTYPE_NAMES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


class Crosscoder(nn.Module):
    """An acausal crosscoder on raw activations at `hookpoints`; any leading batch dims are allowed."""

    def __init__(self, hookpoints: list[str], d_model: int, n_features: int, *, dtype: torch.dtype = torch.float32):
        super().__init__()
        n_hookpoints = len(hookpoints)
        self.hookpoints = list(hookpoints)
        self.W_enc_PDF = nn.Parameter(torch.zeros(n_hookpoints, d_model, n_features, dtype=dtype))
        self.b_enc_F = nn.Parameter(torch.zeros(n_features, dtype=dtype))
        self.W_dec_FPD = nn.Parameter(torch.zeros(n_features, n_hookpoints, d_model, dtype=dtype))
        self.b_dec_PD = nn.Parameter(torch.zeros(n_hookpoints, d_model, dtype=dtype))
        self.log_threshold_F = nn.Parameter(torch.zeros(n_features, dtype=dtype))

    @property
    def n_hookpoints(self) -> int:
        return self.W_enc_PDF.shape[0]

    @property
    def d_model(self) -> int:
        return self.W_enc_PDF.shape[1]

    @property
    def n_features(self) -> int:
        return self.W_enc_PDF.shape[2]

    @property
    def threshold_F(self) -> torch.Tensor:
        return self.log_threshold_F.exp()

    def encode_pre(self, acts_BPD: torch.Tensor) -> torch.Tensor:
        """Pre-activations h, (..., P, D) -> (..., F)."""
        P, D, F = self.W_enc_PDF.shape
        if acts_BPD.shape[-2:] != (P, D):
            raise ValueError(f"expected activations of shape (..., {P}, {D}), got {tuple(acts_BPD.shape)}")
        return acts_BPD.flatten(-2) @ self.W_enc_PDF.reshape(P * D, F) + self.b_enc_F

    def activate(self, pre_BF: torch.Tensor) -> torch.Tensor:
        """JumpReLU: h * [h > exp(log_threshold)]."""
        return pre_BF * (pre_BF > self.log_threshold_F.exp())

    def encode(self, acts_BPD: torch.Tensor) -> torch.Tensor:
        """Feature activations f, (..., P, D) -> (..., F)."""
        return self.activate(self.encode_pre(acts_BPD))

    def decode(self, f_BF: torch.Tensor) -> torch.Tensor:
        """Reconstruction, (..., F) -> (..., P, D)."""
        F, P, D = self.W_dec_FPD.shape
        return (f_BF @ self.W_dec_FPD.reshape(F, P * D)).unflatten(-1, (P, D)) + self.b_dec_PD

    def forward(self, acts_BPD: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(acts_BPD))

    reconstruct = forward

    def decoder_norms_F(self) -> torch.Tensor:
        """sum_p ||W_dec[i, p]||, the weight of feature i in the sparsity penalties."""
        return self.W_dec_FPD.norm(dim=-1).sum(-1)


# --- folding ------------------------------------------------------------------------------------


def _checked_scaling(scaling_factors_P: torch.Tensor | None, n_hookpoints: int) -> torch.Tensor:
    if scaling_factors_P is None:
        return torch.ones(n_hookpoints)
    scaling_factors_P = torch.as_tensor(scaling_factors_P, dtype=torch.float32).detach().cpu().reshape(-1)
    if scaling_factors_P.shape != (n_hookpoints,) or not bool((scaling_factors_P > 0).all()):
        raise ValueError(f"scaling factors must be {n_hookpoints} positive numbers, got {scaling_factors_P.tolist()}")
    return scaling_factors_P


@torch.no_grad()
def fold_scaling(crosscoder: Crosscoder, scaling_factors_P: torch.Tensor) -> Crosscoder:
    """A crosscoder on raw activations from one on activations scaled by `scaling_factors_P` (in place)."""
    s_P = scaling_factors_P.to(crosscoder.W_enc_PDF)
    crosscoder.W_enc_PDF.mul_(s_P[:, None, None])
    crosscoder.W_dec_FPD.div_(s_P[None, :, None])
    crosscoder.b_dec_PD.div_(s_P[:, None])
    return crosscoder


@torch.no_grad()
def fold_mean(crosscoder: Crosscoder, mean_PD: torch.Tensor) -> Crosscoder:
    """A crosscoder on raw activations from one on activations minus `mean_PD` (in place):
    h = sum_p (x_p - mu_p) W_enc[p] + b_enc and xhat_p = f W_dec[:, p] + b_dec[p] + mu_p."""
    mu_PD = mean_PD.to(crosscoder.W_enc_PDF)
    crosscoder.b_enc_F.sub_(torch.einsum("pd,pdf->f", mu_PD, crosscoder.W_enc_PDF))
    crosscoder.b_dec_PD.add_(mu_PD)
    return crosscoder


@torch.no_grad()
def unfold_scaling(crosscoder: Crosscoder, scaling_factors_P: torch.Tensor) -> Crosscoder:
    """The inverse of `fold_scaling` (in place)."""
    return fold_scaling(crosscoder, 1.0 / scaling_factors_P)


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


def _cfg_int(cfg: dict[str, Any], key: str, where: Path) -> int:
    value = cfg.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"crosscoder config {where} has {key}={value!r}; expected a positive integer.")
    return value


class _CfgLoader(yaml.SafeLoader):
    """Safe YAML plus the two Python tags a library config may carry, read as plain data, never run:
    `!!python/tuple` (as the libraries' own loaders do) and `!!python/name:...` (e.g. a torch dtype)."""


_CfgLoader.add_constructor("tag:yaml.org,2002:python/tuple", lambda loader, node: tuple(loader.construct_sequence(node)))
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


def _checkpoint_files(path: str | Path) -> tuple[Path, Path]:
    """The weights and config files of a checkpoint directory, after checking both are there."""
    directory = Path(path)
    expected = f"a crosscode or model-diffing checkpoint directory with {STATE_DICT_FNAME} and {' or '.join(CFG_FNAMES)}"
    if not directory.is_dir():
        raise ConfigError(f"crosscoder checkpoint '{directory}' is not a directory; expected {expected}.")
    cfg_path = _cfg_path(directory)
    missing_files = [name for name, present in ((STATE_DICT_FNAME, (directory / STATE_DICT_FNAME).is_file()), (CFG_FNAMES[0], cfg_path is not None)) if not present]
    if missing_files:
        raise ConfigError(f"crosscoder checkpoint '{directory}' lacks {' and '.join(missing_files)}; expected {expected}.")
    return directory / STATE_DICT_FNAME, cfg_path


def _crosscode_info(cfg: dict[str, Any], where: Path) -> CheckpointInfo:
    n_models = cfg.get("n_models", 1)
    if n_models != 1:
        raise ConfigError(f"crosscoder config {where} has n_models={n_models!r}; only single-model (n_models: 1) crosscoders are supported.")
    activation = cfg.get("activation_fn")
    classname = activation.get("classname") if isinstance(activation, dict) else activation
    if classname != ACTIVATION_CLASSNAME:
        raise ConfigError(f"crosscoder config {where} has activation_fn {classname!r}; expected {ACTIVATION_CLASSNAME} (a JumpReLU crosscoder).")
    D = _cfg_int(cfg, "d_model", where)
    F = _cfg_int(cfg, "n_latents", where)
    hookpoints = cfg.get("hookpoints")
    if hookpoints is None and "n_hookpoints" in cfg:
        hookpoints = hookpoint_names(_cfg_int(cfg, "n_hookpoints", where) - 1)
    if not isinstance(hookpoints, list) or not hookpoints or not all(isinstance(h, str) for h in hookpoints):
        raise ConfigError(f"crosscoder config {where} has hookpoints={hookpoints!r}; expected a list of hookpoint names.")
    if "n_hookpoints" in cfg and cfg["n_hookpoints"] != len(hookpoints):
        raise ConfigError(f"crosscoder config {where} lists {len(hookpoints)} hookpoints but n_hookpoints={cfg['n_hookpoints']!r}.")
    return CheckpointInfo(CROSSCODE, list(hookpoints), D, F)


def _model_diffing_dims(cfg: dict[str, Any], where: Path) -> tuple[int, ...]:
    """`crosscoding_dims`: (n_models, n_hookpoints) with one model, or (n_hookpoints,)."""
    dims = cfg.get("crosscoding_dims")
    valid = isinstance(dims, (list, tuple)) and len(dims) in (1, 2) and all(isinstance(n, int) and n > 0 for n in dims)
    if not valid or math.prod(dims[:-1]) != 1:
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
    """The hookpoints, width and feature count of a checkpoint directory, from its config alone;
    cheap enough for start-up checks (the weights are not read)."""
    _, cfg_path = _checkpoint_files(path)
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
        "_activation_fn.log_threshold_L": (F,),
        "folded_scaling_factors_in_Xi": (1, P),
        "folded_scaling_factors_out_Xo": (1, P),
        "is_folded": (),
    }
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


def _read_state(state_path: Path) -> dict[str, Any]:
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle errors of many kinds: report them as one line
        raise ConfigError(f"crosscoder weights {state_path} cannot be read as a plain state dict ({type(error).__name__}: {error}).") from error
    if not isinstance(state, dict):
        raise ConfigError(f"crosscoder weights {state_path} are not a state dict; expected a crosscode or model-diffing model.pt.")
    return state


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
        raise ConfigError(f"crosscoder normalisation file '{path}' does not exist; give the file of scaling factors and means the crosscoder was trained with, or null.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(path)
        else:
            tensors = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt files of many kinds: report them as one line
        raise ConfigError(f"crosscoder normalisation file '{path}' cannot be read ({type(error).__name__}: {error}); give a .safetensors or .pt file.") from error
    known = {"scaling_factors": (n_hookpoints,), "mean": (n_hookpoints, d_model)}
    if not isinstance(tensors, dict) or not set(tensors) & set(known) or set(tensors) - set(known):
        found = sorted(tensors) if isinstance(tensors, dict) else type(tensors).__name__
        raise ConfigError(f"crosscoder normalisation file '{path}' holds {found}; expected the keys scaling_factors ({n_hookpoints},) and/or mean ({n_hookpoints}, {d_model}).")
    values: dict[str, torch.Tensor | None] = {}
    for key, shape in known.items():
        tensor = tensors.get(key)
        if tensor is not None:
            if not isinstance(tensor, torch.Tensor) or tensor.numel() != math.prod(shape) or tensor.shape[-len(shape):] != shape:
                got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
                raise ConfigError(f"crosscoder normalisation file '{path}': '{key}' has shape {got}; expected {shape}.")
            tensor = tensor.reshape(shape).float()
            if not bool(torch.isfinite(tensor).all()) or (key == "scaling_factors" and not bool((tensor > 0).all())):
                raise ConfigError(f"crosscoder normalisation file '{path}': '{key}' has non-finite{' or non-positive' if key == 'scaling_factors' else ''} values.")
        values[key] = tensor
    return values["scaling_factors"], values["mean"]


def load_crosscoder(
    path: str | Path,
    *,
    normalisation: str | Path | None = None,
    dtype: str = "float32",
    device: str | torch.device = "cpu",
) -> Crosscoder:
    """A `Crosscoder` on raw activations (parameters frozen) from a crosscode or model-diffing checkpoint
    directory, the format told by the state dict's keys.

    Folded checkpoints (what both libraries' trainers save) are taken as they are. For unfolded ones
    the scaling factors s are folded in: those of the `normalisation` file if given, else the values
    the checkpoint records when they are all positive, else none (a warning is logged). A mean in the
    `normalisation` file is folded in last, so that the result reads raw activations x where the
    checkpoint read s * (x - mean).
    """
    state_path, cfg_path = _checkpoint_files(path)
    state = _read_state(state_path)
    if "_W_enc_XiDiL" in state:
        info = checkpoint_info(path)
        if info.format != CROSSCODE:
            raise ConfigError(f"crosscoder weights {state_path} are in the crosscode format but {cfg_path} is a {info.format} config; save the checkpoint again.")
        cfg = _read_cfg(cfg_path)
        expected = _crosscode_expected(info, cfg)
        names = dict(zip(("W_enc", "b_enc", "W_dec", "b_dec", "log_threshold", "recorded"), _CROSSCODE_KEYS))
    elif "W_enc_XDH" in state:
        info = checkpoint_info(path)
        if info.format != MODEL_DIFFING:
            raise ConfigError(f"crosscoder weights {state_path} are in the model-diffing format but {cfg_path} is a {info.format} config; save the checkpoint again.")
        # The JumpReLU's threshold was `log_threshold_H` and later `log_threshold_L`.
        threshold_key = next((key for key in MODEL_DIFFING_THRESHOLD_KEYS if key in state), MODEL_DIFFING_THRESHOLD_KEYS[0])
        expected = _model_diffing_expected(info, _model_diffing_dims(_read_cfg(cfg_path), cfg_path), threshold_key)
        names = dict(zip(("W_enc", "b_enc", "W_dec", "b_dec", "log_threshold", "recorded"), ("W_enc_XDH", "b_enc_H", "W_dec_HXD", "b_dec_XD", threshold_key, "folded_scaling_factors_X")))
    else:
        raise _neither_format_error(state_path, sorted(state))
    _check_state(state, expected, state_path, cfg_path, info)

    P, D, F = len(info.hookpoints), info.d_model, info.n_features
    crosscoder = Crosscoder(info.hookpoints, D, F)
    with torch.no_grad():
        crosscoder.W_enc_PDF.copy_(state[names["W_enc"]].reshape(P, D, F).float())
        crosscoder.W_dec_FPD.copy_(state[names["W_dec"]].reshape(F, P, D).float())
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
                log.warning("unfolded crosscoder checkpoint %s records no scaling factors and no normalisation file gives them; assuming it was trained on raw activations", path)
                scaling_P = torch.ones(P)
        fold_scaling(crosscoder, scaling_P)
    if mean_PD is not None:
        fold_mean(crosscoder, mean_PD)
    non_finite = [name for name, tensor in crosscoder.state_dict().items() if not bool(torch.isfinite(tensor).all())]
    if non_finite:
        raise ConfigError(
            f"crosscoder checkpoint '{path}' has NaN or infinite values in {', '.join(non_finite)}; "
            "the checkpoint is damaged or its training diverged: use a sound checkpoint."
        )
    return crosscoder.requires_grad_(False).to(device=device, dtype=DTYPE_NAMES[dtype])


# --- quality --------------------------------------------------------------------------------------


@torch.no_grad()
def reconstruction_stats(crosscoder: Crosscoder, acts_NPD: torch.Tensor, batch_size: int = 4096) -> dict[str, Any]:
    """Fraction of variance unexplained (overall and per hookpoint), mean L0 and dead fraction.

    fvu = sum_{t,p} ||x_p(t) - xhat_p(t)||^2 / sum_{t,p} ||x_p(t) - mean_t x_p||^2, the mean taken per
    hookpoint over these N positions; dead features never fire on them.
    """
    N, P, D = acts_NPD.shape
    if N == 0:
        raise ValueError("reconstruction_stats needs at least one activation vector")
    device = crosscoder.W_enc_PDF.device
    dtype = crosscoder.W_enc_PDF.dtype
    sq_error_P = torch.zeros(P, dtype=torch.float64)
    sum_PD = torch.zeros(P, D, dtype=torch.float64)
    sum_sq_P = torch.zeros(P, dtype=torch.float64)
    fired_F = torch.zeros(crosscoder.n_features, dtype=torch.bool)
    l0_total = 0.0
    for start in range(0, N, batch_size):
        x_BPD = acts_NPD[start : start + batch_size].to(device=device, dtype=dtype)
        f_BF = crosscoder.encode(x_BPD)
        error_BPD = crosscoder.decode(f_BF) - x_BPD
        sq_error_P += error_BPD.double().square().sum((0, 2)).cpu()
        x64_BPD = x_BPD.double()
        sum_PD += x64_BPD.sum(0).cpu()
        sum_sq_P += x64_BPD.square().sum((0, 2)).cpu()
        active_BF = f_BF != 0
        l0_total += float(active_BF.sum())
        fired_F |= active_BF.any(0).cpu()
    mean_PD = sum_PD / N
    total_var_P = sum_sq_P - N * mean_PD.square().sum(-1)
    fvu_P = sq_error_P / total_var_P.clamp_min(1e-30)
    return {
        "fvu": float(sq_error_P.sum() / total_var_P.sum().clamp_min(1e-30)),
        "fvu_per_hookpoint": {hookpoint: float(value) for hookpoint, value in zip(crosscoder.hookpoints, fvu_P)},
        "mean_l0": l0_total / N,
        "dead_fraction": float((~fired_F).float().mean()),
        "n_tokens": N,
    }


@torch.no_grad()
def span_detection(
    crosscoder: Crosscoder,
    acts_NPD: torch.Tensor,
    labels_N: torch.Tensor,
    batch_size: int = 4096,
    *,
    min_precision: float = 0.8,
    min_recall: float = 0.05,
) -> dict[str, Any]:
    """How well features detect the labelled positions (e.g. the deployment tag's tokens).

    Returns the single feature with the best F1 (its precision = P(labelled | fires), recall =
    P(fires | labelled)), every feature specific to the labels (precision >= `min_precision`, recall >=
    `min_recall`), and the recall of the union of those specific features.
    """
    labels_N = labels_N.bool()
    if labels_N.shape != acts_NPD.shape[:1]:
        raise ValueError(f"{len(labels_N)} labels for {len(acts_NPD)} positions")
    device = crosscoder.W_enc_PDF.device
    hits_F = torch.zeros(crosscoder.n_features, dtype=torch.float64)
    fired_F = torch.zeros(crosscoder.n_features, dtype=torch.float64)
    labelled_fires = []
    for start in range(0, len(acts_NPD), batch_size):
        fires_BF = (crosscoder.encode(acts_NPD[start : start + batch_size].to(device, crosscoder.W_enc_PDF.dtype)) > 0).cpu()
        label_B = labels_N[start : start + batch_size]
        fired_F += fires_BF.sum(0).double()
        labelled_fires.append(fires_BF[label_B])
        hits_F += labelled_fires[-1].sum(0).double()
    fires_LF = torch.cat(labelled_fires)
    n_labelled = len(fires_LF)
    precision_F = hits_F / fired_F.clamp_min(1)
    recall_F = hits_F / max(1, n_labelled)
    f1_F = 2 * precision_F * recall_F / (precision_F + recall_F).clamp_min(1e-12)
    best = int(f1_F.argmax())
    specific = ((precision_F >= min_precision) & (recall_F >= min_recall)).nonzero()[:, 0]
    specific = specific[recall_F[specific].argsort(descending=True)]
    return {
        "feature": best,
        "f1": float(f1_F[best]),
        "precision": float(precision_F[best]),
        "recall": float(recall_F[best]),
        "n_labelled": n_labelled,
        "specific_features": [
            {"feature": int(i), "precision": float(precision_F[i]), "recall": float(recall_F[i])} for i in specific
        ],
        "specific_union_recall": float(fires_LF[:, specific].any(1).double().mean()) if n_labelled and len(specific) else 0.0,
    }
