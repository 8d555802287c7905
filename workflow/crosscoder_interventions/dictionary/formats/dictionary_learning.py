"""The dictionary_learning checkpoint format (saprmarks/dictionary_learning and its crosscoder fork:
`CrossCoder`, a ReLU, and `BatchTopKCrossCoder`): its config, its weights, and BatchTopK's learnt
threshold turned into per-feature thresholds. Its own module because its files, keys and threshold
rule are its own.

Shape letters as in `dictionary.model`; L the library's layer axis (its hookpoints, P here).

The state dict of the dictionary and the trainer's config:
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
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from crosscoder_interventions.dictionary.formats.common import CheckpointInfo, cfg_int, check_state, read_json, read_state
from crosscoder_interventions.dictionary.model import Activation, BatchTopK, Crosscoder, ReLU
from crosscoder_interventions.errors import ConfigError
from crosscoder_interventions.hookpoints import hookpoint_names

DICTIONARY_LEARNING = "dictionary_learning"
DL_WEIGHTS_FNAME, DL_CFG_FNAME = "ae.pt", "config.json"
# dictionary_learning's CodeNormalization ids (the enum's auto() values) that the loader reads.
DL_CODE_NORMALISATIONS = {"CROSSCODER": 1, "SAE": 2, "NONE": 4}


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


def dictionary_learning_info(state: dict[str, Any], state_path: Path, cfg_path: Path) -> CheckpointInfo:
    trainer, activation = _dictionary_learning_trainer(read_json(cfg_path), cfg_path)
    encoder = state.get("encoder.weight")
    if not isinstance(encoder, torch.Tensor) or encoder.ndim != 3:
        got = tuple(encoder.shape) if isinstance(encoder, torch.Tensor) else encoder
        raise ConfigError(
            f"dictionary_learning weights {state_path}: 'encoder.weight' is {got}; expected a (layers, activation_dim, dict_size) tensor."
        )
    n_layers = encoder.shape[0]
    hookpoints = hookpoint_names(n_layers - 1)
    return CheckpointInfo(
        DICTIONARY_LEARNING, hookpoints, cfg_int(trainer, "activation_dim", cfg_path), cfg_int(trainer, "dict_size", cfg_path), activation.name
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


def dictionary_learning_crosscoder(state_path: Path, cfg_path: Path) -> Crosscoder:
    state = read_state(state_path)
    info = dictionary_learning_info(state, state_path, cfg_path)
    trainer, activation = _dictionary_learning_trainer(read_json(cfg_path), cfg_path)
    P, D, F = len(info.hookpoints), info.d_model, info.n_features
    expected = {"encoder.weight": (P, D, F), "encoder.bias": (F,), "decoder.weight": (P, F, D), "decoder.bias": (P, D)}
    if isinstance(activation, BatchTopK):
        expected |= {"k": (), "threshold": ()}
        if "code_normalization_id" in state:
            expected["code_normalization_id"] = ()
    check_state(state, expected, state_path, cfg_path, info)
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
