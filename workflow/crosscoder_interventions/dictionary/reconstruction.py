"""How well a crosscoder reconstructs activations and detects labelled spans (shape letters as in
`dictionary.model`)."""

from __future__ import annotations

from typing import Any

import torch

from crosscoder_interventions.dictionary.model import Crosscoder


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

