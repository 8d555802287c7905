"""Planted features: a trained crosscoder's feature remade to fire on given token positions.

A world built for timing at a real model's size trains its crosscoder only briefly, too briefly for a
feature of the deployment tag to emerge. Interventions cost what they cost because of where their
feature fires (a zero decision costs nothing: docs/engine.md), so such a world plants the features
that the real experiment ablates: one on the tag's tokens, one on the ":" after it. A planted feature i
reads the direction that best tells those positions from the rest (Fisher's linear discriminant,
over all hookpoints together):

    u = S^-1 (mean_on - mean_off), to unit norm; S the within-group covariance, plus a small ridge
    W_enc[:, :, i] = u; fires where <x, u> > c, c halfway between the on positions' 10th and the
    rest's 99.9th percentile (b_enc[i] = 1 - c and threshold 1, so that f_i = <x, u> - c + 1 where
    it fires)
    W_dec[i] = (mean_on - mean_off) / mean f_i over the on positions

so that subtracting f_i W_dec[i] removes, on average over the on positions, what sets them apart. The plain difference
of means would do as a direction only where the rest's activations vary alike in every direction; a
briefly trained model's later hookpoints vary far more in some directions than in others, and there
it tells the tag's tokens from the rest poorly. The crosscoder must read raw activations (scaling
folded in), as saved checkpoints do.

Shape letters: N positions, P hookpoints, D d_model.
"""

from __future__ import annotations

import math

import torch

from crosscoder_interventions.dictionary.model import Crosscoder, JumpReLU
from crosscoder_interventions.errors import ConfigError

# The planting setting of the config's embedded_world.crosscoder section: span name -> feature.
PLANTING_KEYS = ("planted_features",)
ON_QUANTILE = 0.1
OFF_QUANTILE = 0.999
THRESHOLD = 1.0


RIDGE = 1e-3  # times the covariance's mean variance, added to its diagonal


def discriminant_PD(acts_NPD: torch.Tensor, on_N: torch.Tensor, mean_on_PD: torch.Tensor, mean_off_PD: torch.Tensor) -> torch.Tensor:
    """Fisher's discriminant direction (unit norm) between the on and off positions."""
    n_positions = len(acts_NPD)
    centred_NK = (acts_NPD - torch.where(on_N[:, None, None], mean_on_PD, mean_off_PD)).reshape(n_positions, -1)
    covariance_KK = (centred_NK.T @ centred_NK).double() / n_positions
    covariance_KK.diagonal().add_(RIDGE * float(covariance_KK.diagonal().mean()))
    direction_K = torch.linalg.solve(covariance_KK, (mean_on_PD - mean_off_PD).reshape(-1).double())
    return (direction_K / direction_K.norm()).to(acts_NPD.dtype).reshape(mean_on_PD.shape)


@torch.no_grad()
def plant_feature(crosscoder: Crosscoder, acts_NPD: torch.Tensor, on_N: torch.Tensor, feature: int, what: str) -> dict[str, float]:
    """Make `feature` fire on the positions `on_N` of `acts_NPD` (in place, as in the module's
    docstring); returns the fractions of on and off positions it fires on. `what` names the positions
    in errors."""
    if not 0 <= feature < crosscoder.n_features:
        raise ConfigError(f"cannot plant feature {feature} ({what}): the crosscoder has {crosscoder.n_features} features.")
    if not isinstance(crosscoder.activation, JumpReLU):
        raise ConfigError(f"cannot plant feature {feature}: planting sets a JumpReLU threshold, and this crosscoder's is {crosscoder.activation}.")
    # On the crosscoder's device: the covariance is the work, (P D)^2 N multiply-adds.
    device = crosscoder.W_enc_PDF.device
    on_N = on_N.to(device).bool()
    n_on = int(on_N.sum())
    if n_on == 0 or n_on == len(on_N):
        raise ConfigError(f"cannot plant feature {feature}: {n_on} of the {len(on_N)} harvested positions are {what} tokens; "
                          "raise crosscoder n_tokens or min_deployment_fraction.")
    acts_NPD = acts_NPD.to(device=device, dtype=crosscoder.W_enc_PDF.dtype)
    mean_on_PD, mean_off_PD = acts_NPD[on_N].mean(0), acts_NPD[~on_N].mean(0)
    difference_PD = mean_on_PD - mean_off_PD
    direction_PD = discriminant_PD(acts_NPD, on_N, mean_on_PD, mean_off_PD)
    projection_N = torch.einsum("npd,pd->n", acts_NPD, direction_PD)
    cut = float((torch.quantile(projection_N[on_N].float(), ON_QUANTILE) + torch.quantile(projection_N[~on_N].float(), OFF_QUANTILE)) / 2)
    # f_i = <x, u> - c + 1 where <x, u> > c, else 0.
    f_N = torch.where(projection_N > cut, projection_N - cut + THRESHOLD, 0.0)
    mean_activation = float(f_N[on_N].mean())
    crosscoder.W_enc_PDF[:, :, feature] = direction_PD
    crosscoder.b_enc_F[feature] = THRESHOLD - cut
    crosscoder.log_threshold_F[feature] = math.log(THRESHOLD)
    crosscoder.W_dec_FPD[feature] = difference_PD / mean_activation
    fires_N = f_N > 0
    return {"feature": feature, "fires_on": float(fires_N[on_N].float().mean()), "fires_off": float(fires_N[~on_N].float().mean())}
