"""The acausal many-layer crosscoder (docs/design.md, section 2), its activation functions and folding.

Shape letters used in names throughout the package:
    B batch (token positions, flattened), S sequence position, N all harvested positions,
    P hookpoints, D d_model, F features (latents), M models (always 1 here).

A `Crosscoder` always works on RAW hookpoint activations x_p(t):
    h(t)     = sum_p x_p(t) @ W_enc[p] + b_enc                 W_enc_PDF (P, D, F), b_enc_F (F)
    f(t)     = activation(h(t))                                see below
    xhat_p(t) = f(t) @ W_dec[:, p] + b_dec[p]                  W_dec_FPD (F, P, D), b_dec_PD (P, D)

Its `activation` is one of (docs/dictionaries.md says what the interventions mean for each):
- `JumpReLU`: f_i = h_i * [h_i > theta_i], theta = exp(log_threshold_F) (docs/design.md's crosscoder);
- `ReLU`: f_i = h_i * [h_i > 0];
- `BatchTopK(k)`: trained keeping the k * batch largest activations of a batch, evaluated as its
  authors do, with the threshold learnt in training: a JumpReLU whose per-feature thresholds the
  loader stores in log_threshold_F;
- `TopK(k)`: f_i = h_i * [h_i is among the k largest of h(t) and h_i > 0];
- `SignedTopK(k)`: f_i = h_i * [h_i is among the k largest of h(t)], negative values kept (the
  crosscode library's TopK).
The first three are per-feature (f_i depends on h_i alone); the TopKs are not.

A single-layer SAE is a crosscoder with one hookpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch
from torch import nn


class Activation(Protocol):
    """What a crosscoder does to its pre-activations h (..., F) -> f (..., F)."""

    name: ClassVar[str]
    per_feature: ClassVar[bool]  # f_i depends on h_i alone, through f_i = h_i * [h_i > theta_i]

    def __call__(self, pre_BF: torch.Tensor, log_threshold_F: torch.Tensor) -> torch.Tensor: ...

    def threshold_F(self, log_threshold_F: torch.Tensor) -> torch.Tensor:
        """theta of a per-feature activation."""
        ...


class Dictionary(Protocol):
    """What the engine and the oracle read of a dictionary: `Crosscoder` is one; any object with these
    (an adapter over another library's crosscoder or SAE, say) can be intervened on too. Read-only
    properties, so that parameters (tensors) satisfy them."""

    @property
    def hookpoints(self) -> list[str]: ...

    @property
    def activation(self) -> Activation: ...

    @property
    def W_enc_PDF(self) -> torch.Tensor: ...

    @property
    def b_enc_F(self) -> torch.Tensor: ...

    @property
    def W_dec_FPD(self) -> torch.Tensor: ...

    @property
    def threshold_F(self) -> torch.Tensor: ...

    def encode_pre(self, acts_BPD: torch.Tensor) -> torch.Tensor: ...

    def encode(self, acts_BPD: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class JumpReLU:
    """f_i = h_i * [h_i > exp(log_threshold_i)]."""

    name: ClassVar[str] = "jumprelu"
    per_feature: ClassVar[bool] = True

    def threshold_F(self, log_threshold_F: torch.Tensor) -> torch.Tensor:
        return log_threshold_F.exp()

    def __call__(self, pre_BF: torch.Tensor, log_threshold_F: torch.Tensor) -> torch.Tensor:
        return pre_BF * (pre_BF > self.threshold_F(log_threshold_F))


@dataclass(frozen=True)
class ReLU:
    """f_i = h_i * [h_i > 0] (log_threshold_F is not used)."""

    name: ClassVar[str] = "relu"
    per_feature: ClassVar[bool] = True

    def threshold_F(self, log_threshold_F: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(log_threshold_F)

    def __call__(self, pre_BF: torch.Tensor, log_threshold_F: torch.Tensor) -> torch.Tensor:
        return pre_BF * (pre_BF > 0)


@dataclass(frozen=True)
class BatchTopK(JumpReLU):
    """A BatchTopK crosscoder at inference: f_i = h_i * [h_i > exp(log_threshold_i)], the thresholds
    those its training learnt (dictionary_learning: theta / sum_p ||W_dec[i, p]||, theta >= 0 one
    number in decoder-norm-weighted units; a threshold of 0 is log_threshold -inf). `k`, the mean
    number of active features in training, is kept for the record only."""

    k: int = 0
    name: ClassVar[str] = "batchtopk"


@dataclass(frozen=True)
class TopK:
    """f_i = h_i * [h_i among the k largest of h and h_i > 0] (log_threshold_F is not used). Ties at
    the k-th value are broken by torch.topk."""

    k: int
    name: ClassVar[str] = "topk"
    per_feature: ClassVar[bool] = False

    def threshold_F(self, log_threshold_F: torch.Tensor) -> torch.Tensor:
        raise TypeError("a TopK activation has no per-feature threshold: f_i depends on every feature's h")

    def kept_BF(self, pre_BF: torch.Tensor) -> torch.Tensor:
        """Where h_i is among the k largest of h."""
        top_BK = pre_BF.topk(min(self.k, pre_BF.shape[-1]), dim=-1).indices
        return torch.zeros_like(pre_BF, dtype=torch.bool).scatter_(-1, top_BK, True)

    def __call__(self, pre_BF: torch.Tensor, log_threshold_F: torch.Tensor) -> torch.Tensor:
        return pre_BF * (self.kept_BF(pre_BF) & (pre_BF > 0))


@dataclass(frozen=True)
class SignedTopK(TopK):
    """The crosscode library's TopK: f_i = h_i * [h_i among the k largest of h], with no ReLU, so that
    a negative h_i in the top k (fewer than k positive pre-activations) is kept, negative."""

    name: ClassVar[str] = "signed_topk"

    def __call__(self, pre_BF: torch.Tensor, log_threshold_F: torch.Tensor) -> torch.Tensor:
        return pre_BF * self.kept_BF(pre_BF)


class Crosscoder(nn.Module):
    """An acausal crosscoder on raw activations at `hookpoints`; any leading batch dims are allowed."""

    def __init__(
        self, hookpoints: list[str], d_model: int, n_features: int, *, dtype: torch.dtype = torch.float32, activation: Activation = JumpReLU()
    ):
        super().__init__()
        n_hookpoints = len(hookpoints)
        self.hookpoints = list(hookpoints)
        self.activation = activation
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
        """theta of a per-feature activation."""
        return self.activation.threshold_F(self.log_threshold_F)

    def encode_pre(self, acts_BPD: torch.Tensor) -> torch.Tensor:
        """Pre-activations h, (..., P, D) -> (..., F)."""
        P, D, F = self.W_enc_PDF.shape
        if acts_BPD.shape[-2:] != (P, D):
            raise ValueError(f"expected activations of shape (..., {P}, {D}), got {tuple(acts_BPD.shape)}")
        return acts_BPD.flatten(-2) @ self.W_enc_PDF.reshape(P * D, F) + self.b_enc_F

    def activate(self, pre_BF: torch.Tensor) -> torch.Tensor:
        """f from h, (..., F) -> (..., F), by the crosscoder's activation."""
        return self.activation(pre_BF, self.log_threshold_F)

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

