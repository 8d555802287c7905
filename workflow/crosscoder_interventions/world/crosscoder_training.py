"""Training a crosscoder with the January 2025 recipe (Anthropic, "Circuits Updates - January 2025").

As in the crosscode library's `jan_update` trainer and `DataDependentJumpReLUInitStrategy`:

- Activations are scaled per hookpoint by s_p = sqrt(D) / mean_t ||x_p(t)||, estimated on a sample,
  so that every hookpoint's mean norm is sqrt(D); the crosscoder trains on s_p x_p and its scaling
  is folded into the weights afterwards (`crosscoder.fold_scaling`).
- Loss = sum_p ||xhat_p - x_p||^2 (mean over the batch)
         + lambda_s(t) * sum_i tanh(c * f_i * ||W_dec_i||)          lambda_s ramped linearly from 0
         + lambda_p * sum_i ReLU(theta_i - h_i) * ||W_dec_i||         (pre-activation loss)
  where ||W_dec_i|| = sum_p ||W_dec[i, p]||. The pre-activation loss uses the pre-activation h, as in
  Anthropic's update (the library passes the post-JumpReLU f there).
- JumpReLU with a straight-through estimator for the threshold: d f / d log(theta) =
  -(theta / bandwidth) * rect((h - theta) / bandwidth), the library's `AnthropicJumpReLU`.
- Init: W_dec ~ U(-1/n, 1/n) with n = P * D, W_enc = W_dec^T * n / F, b_dec = 0,
  log(theta) = log_threshold_init, and b_enc = theta - (1 - initial_firing_fraction) quantile of
  the pre-bias pre-activations, so each feature fires on about that fraction of tokens at the start.
- Adam (betas 0, 0.999 by default), gradient norm clipped to 1, learning rate warmed up linearly,
  constant, then decayed linearly to 0 over the last `warmdown_fraction` of the steps.

Shape letters: N positions, B batch, P hookpoints, D d_model, F features.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from tqdm.auto import tqdm

from crosscoder_interventions.dictionary.model import Crosscoder, fold_scaling

# The training settings of the config's embedded_world.crosscoder section (values and defaults: the schema).
TRAINING_KEYS = (
    "n_features", "steps", "batch_size", "lr", "betas", "warmup_fraction", "warmdown_fraction", "grad_clip", "lambda_s", "lambda_p", "c",
    "bandwidth", "log_threshold_init", "initial_firing_fraction", "n_tokens_for_threshold_setting", "n_tokens_for_norm_estimate",
)


def training_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The training settings of a validated crosscoder section; the harvesting settings are left out."""
    merged = {key: cfg[key] for key in TRAINING_KEYS}
    merged["betas"] = tuple(merged["betas"])
    for key in ("n_features", "steps", "batch_size"):
        if int(merged[key]) < 1:
            raise ValueError(f"crosscoder {key} must be at least 1, got {merged[key]}")
    if not 0 < merged["initial_firing_fraction"] < 1:
        raise ValueError(f"initial_firing_fraction must be in (0, 1), got {merged['initial_firing_fraction']}")
    return merged


class JumpReLUSTE(torch.autograd.Function):
    """f = h * [h > theta]; input gradient through the gate, threshold gradient by a rectangle-kernel STE.

    The library's `AnthropicJumpReLU`: d f / d log(theta) = -(theta / bandwidth) * rect((h - theta) / bandwidth).
    """

    @staticmethod
    def forward(ctx: Any, pre_BF: torch.Tensor, log_threshold_F: torch.Tensor, bandwidth: float) -> torch.Tensor:
        threshold_F = log_threshold_F.exp()
        ctx.save_for_backward(pre_BF, threshold_F)
        ctx.bandwidth = bandwidth
        return pre_BF * (pre_BF > threshold_F)

    @staticmethod
    def backward(ctx: Any, grad_BF: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        pre_BF, threshold_F = ctx.saved_tensors
        bandwidth = ctx.bandwidth
        grad_pre_BF = grad_BF * (pre_BF > threshold_F)
        in_window_BF = ((pre_BF - threshold_F).abs() < bandwidth / 2).to(grad_BF.dtype)
        grad_log_threshold_F = -(threshold_F / bandwidth) * (in_window_BF * grad_BF).sum(0)
        return grad_pre_BF, grad_log_threshold_F, None


class JumpReLUWithPenalties(torch.autograd.Function):
    """JumpReLU (STE as `JumpReLUSTE`) fused with the two sparsity penalties, to save passes over (B, F).

    Returns f_BF and the batch means of sum_i tanh(c f_i n_i) and of sum_i ReLU(theta_i - h_i) n_i,
    n_F being the summed decoder norms. Gradients equal autograd's through the unfused expressions
    (checked in the tests), with d ReLU(theta - h) / d h = -[h < theta].
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, pre_BF: torch.Tensor, log_threshold_F: torch.Tensor, norms_F: torch.Tensor, c: float, bandwidth: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        threshold_F = log_threshold_F.exp()
        batch = pre_BF.shape[0]
        f_BF = torch.where(pre_BF > threshold_F, pre_BF, 0.0)
        tanh_BF = torch.mul(f_BF, c * norms_F).tanh_()
        sparsity = tanh_BF.sum() / batch
        below_BF = torch.sub(threshold_F, pre_BF).clamp_min_(0.0)
        below_sum_F = below_BF.sum(0)
        pre_act = below_sum_F @ norms_F / batch
        ctx.save_for_backward(pre_BF, threshold_F, norms_F, tanh_BF, below_sum_F)
        ctx.c, ctx.bandwidth = c, bandwidth
        return f_BF, sparsity, pre_act

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_f_BF: torch.Tensor | None, grad_sparsity: torch.Tensor, grad_pre_act: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None, None]:
        pre_BF, threshold_F, norms_F, tanh_BF, below_sum_F = ctx.saved_tensors
        c, bandwidth = ctx.c, ctx.bandwidth
        batch = pre_BF.shape[0]
        k_s = grad_sparsity / batch
        k_p = grad_pre_act / batch
        active_BF = pre_BF > threshold_F
        f_BF = torch.where(active_BF, pre_BF, 0.0)
        # d tanh(c f n) = (1 - tanh^2) c (n df + f dn)
        sech2_BF = torch.addcmul(torch.ones_like(tanh_BF), tanh_BF, tanh_BF, value=-1.0)
        grad_norms_F = k_s * c * (sech2_BF * f_BF).sum(0) + k_p * below_sum_F
        grad_f_total_BF = sech2_BF.mul_(k_s * c * norms_F)
        if grad_f_BF is not None:
            grad_f_total_BF.add_(grad_f_BF)
        in_window_BF = (pre_BF - threshold_F).abs_() < bandwidth / 2
        grad_log_threshold_F = -(threshold_F / bandwidth) * torch.where(in_window_BF, grad_f_total_BF, 0.0).sum(0)
        n_below_F = batch - active_BF.sum(0) - (pre_BF == threshold_F).sum(0)
        grad_log_threshold_F += k_p * norms_F * threshold_F * n_below_F
        below_only_BF = pre_BF < threshold_F
        grad_pre_BF = torch.where(active_BF, grad_f_total_BF, torch.where(below_only_BF, -k_p * norms_F, 0.0))
        return grad_pre_BF, grad_log_threshold_F, grad_norms_F, None, None


def sample_rows(n_rows: int, n_wanted: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randperm(n_rows, generator=generator)[: min(n_rows, n_wanted)]


@torch.no_grad()
def estimate_scaling_factors(acts_NPD: torch.Tensor, n_tokens: int, generator: torch.Generator) -> torch.Tensor:
    """s_P = sqrt(D) / mean norm of each hookpoint's activations, on a random sample of positions."""
    sample_nPD = acts_NPD[sample_rows(len(acts_NPD), n_tokens, generator)].float()
    mean_norm_P = sample_nPD.norm(dim=-1).mean(0)
    return math.sqrt(acts_NPD.shape[-1]) / mean_norm_P.clamp_min(1e-12)


@torch.no_grad()
def initialise(
    crosscoder: Crosscoder, scaled_sample_nPD: torch.Tensor, cfg: dict[str, Any], generator: torch.Generator
) -> None:
    """The library's data-dependent JumpReLU init, on scaled activations."""
    P, D, F = crosscoder.W_enc_PDF.shape
    n = P * D
    W_dec_FPD = (torch.rand(F, P, D, generator=generator) * 2 - 1) / n
    crosscoder.W_dec_FPD.copy_(W_dec_FPD)
    crosscoder.W_enc_PDF.copy_(W_dec_FPD.permute(1, 2, 0) * (n / F))
    crosscoder.b_dec_PD.zero_()
    crosscoder.log_threshold_F.fill_(cfg["log_threshold_init"])
    crosscoder.b_enc_F.zero_()
    pre_bias_nF = crosscoder.encode_pre(scaled_sample_nPD.to(crosscoder.W_enc_PDF))
    quantile_F = torch.quantile(pre_bias_nF, 1 - cfg["initial_firing_fraction"], dim=0)
    crosscoder.b_enc_F.copy_(crosscoder.log_threshold_F.exp() - quantile_F)


def learning_rate(step: int, cfg: dict[str, Any]) -> float:
    """Linear warmup over the first `warmup_fraction` of the steps, then constant, then linear decay to 0
    over the last `warmdown_fraction` (the library's Adam schedule)."""
    steps, lr = cfg["steps"], cfg["lr"]
    warmup_steps = round(cfg["warmup_fraction"] * steps)
    warmdown_steps = round(cfg["warmdown_fraction"] * steps)
    if step < warmup_steps:
        return lr * (step + 1) / (warmup_steps + 1)
    if step >= steps - warmdown_steps:
        return lr * (steps - step) / warmdown_steps
    return lr


def losses(
    crosscoder: Crosscoder, x_BPD: torch.Tensor, lambda_s: float, cfg: dict[str, Any]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The training loss on scaled activations and its parts (detached)."""
    pre_BF = crosscoder.encode_pre(x_BPD)
    decoder_norms_F = crosscoder.decoder_norms_F()
    f_BF, sparsity, pre_act = JumpReLUWithPenalties.apply(
        pre_BF, crosscoder.log_threshold_F, decoder_norms_F, cfg["c"], cfg["bandwidth"]
    )
    error_BPD = crosscoder.decode(f_BF) - x_BPD
    sq_error = error_BPD.square().sum()
    reconstruction = sq_error / len(x_BPD)
    loss = reconstruction + lambda_s * sparsity + cfg["lambda_p"] * pre_act
    parts = {
        "reconstruction": reconstruction.detach(),
        "sparsity": sparsity.detach(),
        "pre_act": pre_act.detach(),
        "sq_error": sq_error.detach(),
        "f_BF": f_BF.detach(),
    }
    return loss, parts


def train_crosscoder(
    acts_NPD: torch.Tensor,
    hookpoints: list[str],
    cfg: dict[str, Any],
    seed: int,
    *,
    device: str = "cpu",
    progress: bool = True,
) -> tuple[Crosscoder, torch.Tensor, dict[str, Any]]:
    """Train on raw activations `acts_NPD`; return the crosscoder on RAW activations (scaling folded
    in), the scaling factors s_P it was trained with, and training statistics. Deterministic in `seed`."""
    cfg = training_config(cfg)
    N, P, D = acts_NPD.shape
    if P != len(hookpoints):
        raise ValueError(f"activations have {P} hookpoints but {len(hookpoints)} hookpoint names were given")
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    scaling_factors_P = estimate_scaling_factors(acts_NPD, cfg["n_tokens_for_norm_estimate"], generator)
    s_1PD = scaling_factors_P[None, :, None].to(device)

    crosscoder = Crosscoder(hookpoints, D, cfg["n_features"]).to(device)
    threshold_sample_nPD = acts_NPD[sample_rows(N, cfg["n_tokens_for_threshold_setting"], generator)].to(device) * s_1PD
    initialise(crosscoder, threshold_sample_nPD, cfg, generator)
    del threshold_sample_nPD

    optimizer = torch.optim.Adam(crosscoder.parameters(), lr=cfg["lr"], betas=cfg["betas"], fused=True)
    batch_size = min(cfg["batch_size"], N)
    steps = cfg["steps"]
    order_N = torch.randperm(N, generator=generator)
    cursor = 0
    history: list[dict[str, float]] = []
    window = max(1, steps // 10)
    tail_sq_error, tail_sq_norm = 0.0, 0.0
    bar = tqdm(range(steps), desc="crosscoder", disable=not progress, mininterval=2.0)
    for step in bar:
        if cursor + batch_size > N:
            order_N = torch.randperm(N, generator=generator)
            cursor = 0
        rows_B = order_N[cursor : cursor + batch_size]
        cursor += batch_size
        x_BPD = acts_NPD[rows_B].to(device, non_blocking=True) * s_1PD
        lr = learning_rate(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        lambda_s = cfg["lambda_s"] * step / steps
        loss, parts = losses(crosscoder, x_BPD, lambda_s, cfg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(crosscoder.parameters(), cfg["grad_clip"])
        optimizer.step()
        if step >= steps - window:
            tail_sq_error += float(parts["sq_error"])
            tail_sq_norm += float((x_BPD - x_BPD.mean(0)).square().sum())
        if step % max(1, steps // 50) == 0 or step == steps - 1:
            record = {"step": step, "loss": float(loss.detach()), "lr": lr, "lambda_s": lambda_s}
            record.update({key: float(parts[key]) for key in ("reconstruction", "sparsity", "pre_act")})
            record["l0"] = float((parts["f_BF"] != 0).sum()) / len(x_BPD)
            history.append(record)
            bar.set_postfix(loss=f"{record['loss']:.1f}", recon=f"{record['reconstruction']:.1f}", l0=f"{record['l0']:.1f}", refresh=False)

    crosscoder = crosscoder.cpu()
    fold_scaling(crosscoder, scaling_factors_P)
    crosscoder.requires_grad_(False)
    stats = {
        "n_tokens": N,
        "steps": steps,
        "batch_size": batch_size,
        "tokens_seen": steps * batch_size,
        "epochs": steps * batch_size / N,
        "train_fvu_last_steps": tail_sq_error / max(tail_sq_norm, 1e-30),
        "final": history[-1],
        "scaling_factors": scaling_factors_P.tolist(),
        "seconds": time.perf_counter() - started,
        "config": {key: (list(value) if isinstance(value, tuple) else value) for key, value in cfg.items()},
        "history": history,
    }
    return crosscoder, scaling_factors_P, stats
