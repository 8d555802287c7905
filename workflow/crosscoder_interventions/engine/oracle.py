"""The oracle: interventions applied exactly as docs/design.md, section 3 words them, slowly.

One prompt at a time, no padding, no key/value cache. For every position t:
1. run(t): the model on tokens[:t+1] with the modifications already decided for positions < t
   re-applied, and none at t;
2. decide the modification of t from run(t) (nothing to decide for steering; f_i(t) for the naive
   ablations; dh_i/dx(t) by autograd for the gradient methods; `steps` gradient steps, each a fresh
   forward of tokens[:t+1], for the perturbations, the penalised one against the encoding of run(t));
3. redo: the model on tokens[:t+1] with the modification at t as well. Its activations at t are the
   intervened activations of t, and its logits at t choose token t+1 (greedy).

A modification adds a vector to each hookpoint's activation as the forward pass runs, so later
hookpoints see the effect of earlier ones. Tokens live on the model's device; modifications and
activations are in the crosscoder's dtype on its device, cast to the model's dtype where they are
added, as in the fast path. The intervened run covers the prompt and every generated
token but the last, which no forward pass needs.

Shape letters: S sequence position, P hookpoint, D d_model, F features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformer_lens.model_bridge import TransformerBridge

from crosscoder_interventions.dictionary.model import Dictionary
from crosscoder_interventions.engine.interventions import Intervention, PenalisedPerturbation, Perturbation, PerturbationAblation, Plain
from crosscoder_interventions.runtime import device_of


@dataclass(frozen=True)
class ReferenceResult:
    generated: list[int]
    logits_NV: torch.Tensor  # the logits each generated token was chosen from
    acts_SPD: torch.Tensor  # intervened activations of every position that was run
    target_S: torch.Tensor  # f_i of the crosscoder encoding of acts_SPD
    target_activation: float
    other_feature_change: float


def acts_from(setting: Intervention, start: int) -> int:
    """First position the setting acts on: `start` for steering and clamping, 0 otherwise."""
    return start if setting.acts_from_start else 0


def forward_with_modifications(
    bridge: TransformerBridge, hookpoints: Sequence[str], tokens_S: torch.Tensor, mods_SPD: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (S, V) and hookpoint activations (S, P, D; in mods_SPD's dtype) of tokens_S with mods_SPD
    added as the forward runs."""
    captured: dict[int, torch.Tensor] = {}

    def hook_at(p: int):
        def hook(x_1SD: torch.Tensor, hook: object) -> torch.Tensor:
            x_1SD = x_1SD + mods_SPD[None, :, p].to(x_1SD.dtype)
            captured[p] = x_1SD[0].to(mods_SPD.dtype)
            return x_1SD

        return hook

    with bridge.hooks(fwd_hooks=[(name, hook_at(p)) for p, name in enumerate(hookpoints)]):
        logits_1SV = bridge(tokens_S[None], return_type="logits")
    return logits_1SV[0], torch.stack([captured[p] for p in range(len(hookpoints))], dim=1)


def unit_mask_P(setting: Intervention, hookpoints: Sequence[str]) -> torch.Tensor:
    """1 at the hookpoints a naive method or steering writes to, 0 elsewhere."""
    if setting.single_layer:
        return torch.tensor([float(name == getattr(setting, "hookpoint", None)) for name in hookpoints])
    return torch.ones(len(hookpoints))


def decide(
    bridge: TransformerBridge,
    crosscoder: Dictionary,
    setting: Intervention,
    tokens_S: torch.Tensor,
    mods_SPD: torch.Tensor,
) -> torch.Tensor:
    """The modification (P, D) of the last position of tokens_S, from run(t) over the intervened prefix."""
    hookpoints = crosscoder.hookpoints
    t = tokens_S.shape[0] - 1
    if isinstance(setting, Plain):
        return torch.zeros_like(mods_SPD[t])
    if isinstance(setting, Perturbation):
        return _perturbation_PD(bridge, crosscoder, setting, tokens_S, mods_SPD)
    if setting.direction == "encoder":
        # Each hookpoint's activation an input of the encoder, not a function of the earlier ones.
        _, acts_SPD = forward_with_modifications(bridge, hookpoints, tokens_S, mods_SPD)
        x_PD = acts_SPD[t].detach().requires_grad_(True)
        with torch.enable_grad():
            (g_PD,) = torch.autograd.grad(crosscoder.encode_pre(x_PD[None])[0, setting.feature], x_PD)
        return setting.signed_coef * g_PD / g_PD.norm()
    direction_PD = crosscoder.W_dec_FPD[setting.feature].detach()
    mask_P1 = unit_mask_P(setting, hookpoints).to(direction_PD)[:, None]
    if setting.kind == "naive":
        _, acts_SPD = forward_with_modifications(bridge, hookpoints, tokens_S, mods_SPD)
        f_i = crosscoder.encode(acts_SPD[t][None])[0, setting.feature]
        return setting.signed_coef * f_i * mask_P1 * direction_PD
    return setting.signed_coef * mask_P1 * direction_PD


def _perturbation_PD(
    bridge: TransformerBridge, crosscoder: Dictionary, setting: Perturbation, tokens_S: torch.Tensor, mods_SPD: torch.Tensor
) -> torch.Tensor:
    """`decide` for the perturbation methods: `steps` gradient-descent steps on the loss of each."""
    hookpoints = crosscoder.hookpoints
    t = tokens_S.shape[0] - 1
    if isinstance(setting, PenalisedPerturbation):
        _, plain_SPD = forward_with_modifications(bridge, hookpoints, tokens_S, mods_SPD)
        f_plain_F = crosscoder.encode(plain_SPD[t][None])[0]
        others_F = torch.arange(f_plain_F.shape[0], device=f_plain_F.device) != setting.feature
    delta_PD = torch.zeros_like(mods_SPD[t])
    for _ in range(setting.steps):
        delta_PD.requires_grad_(True)
        with torch.enable_grad():
            trial_SPD = torch.cat([mods_SPD[:t], delta_PD[None]])
            _, acts_SPD = forward_with_modifications(bridge, hookpoints, tokens_S, trial_SPD)
            if isinstance(setting, PerturbationAblation):
                loss = crosscoder.encode(acts_SPD[t][None])[0, setting.feature]
            elif isinstance(setting, PenalisedPerturbation):
                f_F = crosscoder.encode(acts_SPD[t][None])[0]
                # torch's |.| has gradient 0 at 0: where delta is 0, f = f_plain and only f_i pulls.
                loss = f_F[setting.feature] + setting.penalty * (f_F - f_plain_F)[others_F].abs().sum()
            else:
                loss = (crosscoder.encode_pre(acts_SPD[t][None])[0, setting.feature] - setting.target) ** 2
            (grad_PD,) = torch.autograd.grad(loss, delta_PD)
        delta_PD = (delta_PD - setting.lr * grad_PD).detach()
    return delta_PD


def other_feature_change(
    f_int_SF: torch.Tensor, f_plain_SF: torch.Tensor, feature: int | None, positions_S: torch.Tensor | None = None
) -> torch.Tensor:
    """sum over positions and features j != i of |f_j - f0_j|, divided by the sum of |f0_j| (nan if that is 0).

    f_int_SF from the intervened run, f_plain_SF from the un-intervened run of the same (prompt) tokens;
    positions_S, if given, the positions that count (the others, pads, are masked out). A 0-d tensor
    on their device, so that a caller that keeps its values there need not wait for it.
    """
    keep_SF = torch.ones_like(f_int_SF, dtype=torch.bool)
    if feature is not None:
        keep_SF[:, feature] = False
    if positions_S is not None:
        keep_SF &= positions_S[:, None]
    change = ((f_int_SF - f_plain_SF).abs() * keep_SF).sum()
    scale = (f_plain_SF.abs() * keep_SF).sum()
    return torch.where(scale > 0, change / scale, torch.nan)


@torch.no_grad()
def reference_generate(
    bridge: TransformerBridge,
    crosscoder: Dictionary,
    prompt: Sequence[int],
    setting: Intervention,
    *,
    max_new_tokens: int,
    start: int = 0,
) -> ReferenceResult:
    """Greedy generation of one prompt under `setting`, position by position, recomputing everything.

    Diagnostics (the definitions the fast path must reproduce):
    - target_activation: mean of f_i over the positions the setting acts on (all positions for
      ablations and Plain, positions >= start for steering and clamping), f from the crosscoder
      encoding of the intervened activations;
    - other_feature_change: `other_feature_change` over the prompt positions, against the plain run
      of the prompt (0 for Plain; target_activation is nan for a Plain without feature).
    """
    hookpoints = crosscoder.hookpoints
    n_hookpoints, d_model = len(hookpoints), crosscoder.W_dec_FPD.shape[2]
    crosscoder_dtype, crosscoder_device = crosscoder.W_dec_FPD.dtype, crosscoder.W_dec_FPD.device
    model_device = device_of(bridge)
    tokens = list(prompt)
    n_positions = len(prompt) + max_new_tokens - 1
    mods_SPD = torch.zeros(0, n_hookpoints, d_model, dtype=crosscoder_dtype, device=crosscoder_device)
    acts, chosen_from = [], []
    for t in range(n_positions):
        tokens_S = torch.tensor(tokens[: t + 1], device=model_device)
        mods_SPD = torch.cat([mods_SPD, torch.zeros(1, n_hookpoints, d_model, dtype=crosscoder_dtype, device=crosscoder_device)])
        if t >= acts_from(setting, start):
            mods_SPD[t] = decide(bridge, crosscoder, setting, tokens_S, mods_SPD)
        logits_SV, acts_SPD = forward_with_modifications(bridge, hookpoints, tokens_S, mods_SPD)
        acts.append(acts_SPD[t])
        if t == len(tokens) - 1:
            tokens.append(int(logits_SV[t].argmax()))
            chosen_from.append(logits_SV[t])
    acts_SPD = torch.stack(acts)
    f_SF = crosscoder.encode(acts_SPD)
    feature = setting.feature
    target_S = f_SF[:, feature] if feature is not None else torch.full((n_positions,), float("nan"), dtype=crosscoder_dtype, device=crosscoder_device)
    n_prompt = len(prompt)
    _, plain_SPD = forward_with_modifications(
        bridge,
        hookpoints,
        torch.tensor(prompt, device=model_device),
        torch.zeros(n_prompt, n_hookpoints, d_model, dtype=crosscoder_dtype, device=crosscoder_device),
    )
    change = 0.0 if isinstance(setting, Plain) else float(other_feature_change(f_SF[:n_prompt], crosscoder.encode(plain_SPD), feature))
    return ReferenceResult(
        generated=tokens[len(prompt) :],
        logits_NV=torch.stack(chosen_from),
        acts_SPD=acts_SPD,
        target_S=target_S,
        target_activation=float(target_S[acts_from(setting, start) :].mean()),
        other_feature_change=change,
    )
