"""The SAELens checkpoint format: a single-layer SAE, read as a crosscoder with one hookpoint (the
SAE's `hook_name`). Its own module because its files, keys and activations are its own.

Shape letters as in `dictionary.model`.

- `sae_weights.safetensors`: `W_enc` (D, F), `b_enc` (F), `W_dec` (F, D), `b_dec` (D), and
  `threshold` (F) for a JumpReLU SAE.
- `cfg.json`: `architecture` (standard: ReLU; jumprelu: relu(h) * [h > threshold]; topk: the k largest
  of h, then relu; absent in old versions: standard), `d_in`, `d_sae`, `hook_name`,
  `apply_b_dec_to_input` (h = (x - b_dec) W_enc + b_enc, folded into b_enc; SAELens's default true),
  `normalize_activations` (only none is read), `k` or `activation_fn_kwargs.k` (topk).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from crosscoder_interventions.dictionary.formats.common import CheckpointInfo, cfg_int, check_state, read_json, read_state
from crosscoder_interventions.dictionary.model import Activation, Crosscoder, JumpReLU, ReLU, TopK
from crosscoder_interventions.errors import ConfigError

SAELENS = "saelens"
SAELENS_WEIGHTS_FNAME, SAELENS_CFG_FNAME = "sae_weights.safetensors", "cfg.json"


def _saelens_activation(cfg: dict[str, Any], where: Path) -> Activation:
    architecture = cfg.get("architecture", "standard")
    if architecture == "standard":
        return ReLU()
    if architecture == "jumprelu":
        return JumpReLU()
    if architecture == "topk":
        kwargs = cfg.get("activation_fn_kwargs")
        k = cfg.get("k", kwargs.get("k") if isinstance(kwargs, dict) else None)
        return TopK(cfg_int({"k": k}, "k", where))
    raise ConfigError(f"SAELens config {where} has architecture {architecture!r}; only standard, jumprelu and topk SAEs are read.")


def saelens_info(cfg: dict[str, Any], where: Path) -> CheckpointInfo:
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
    return CheckpointInfo(SAELENS, [hook_name], cfg_int(cfg, "d_in", where), cfg_int(cfg, "d_sae", where), activation.name)


def saelens_crosscoder(state_path: Path, cfg_path: Path) -> Crosscoder:
    cfg = read_json(cfg_path)
    info = saelens_info(cfg, cfg_path)
    activation = _saelens_activation(cfg, cfg_path)
    D, F = info.d_model, info.n_features
    expected = {"W_enc": (D, F), "b_enc": (F,), "W_dec": (F, D), "b_dec": (D,)}
    if isinstance(activation, JumpReLU):
        expected["threshold"] = (F,)
    state = read_state(state_path)
    check_state(state, expected, state_path, cfg_path, info)
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
