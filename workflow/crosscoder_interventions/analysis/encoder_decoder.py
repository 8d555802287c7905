"""Encoder against decoder (docs/design.md, section 9): does a feature read what it writes?

Per selected feature i and hookpoint p, cos(W_enc[p, :, i], W_dec[i, p]): near 1 when the encoder
reads the direction the decoder writes, lower when it also has to exclude other directions. And the
decoder features most similar to feature i's, each with the cosine of its encoder to feature i's: a
decoder direction close to i's whose encoder differs is the mark of feature absorption (feature j
writes much of what i writes, and takes i's activation on the inputs it fires on).

Cosines are taken per hookpoint and over all hookpoints concatenated (`hookpoint` "all"). Per
hookpoint they do not depend on how the activations were scaled for training; the concatenated ones
are in raw-activation units, where the hookpoints with the largest activations weigh most.

Shape suffixes: P hookpoints, D d_model, F features, X a flattened (hookpoint, d_model).
"""

from __future__ import annotations

import pandas as pd
import torch

from crosscoder_interventions.dictionary.model import Crosscoder

N_NEIGHBOURS = 5
ALL_HOOKPOINTS = "all"
# A neighbour bears the mark of absorption when its decoder is at least this close to the target's ...
ABSORPTION_MIN_DECODER_COS = 0.3
# ... and its encoder's cosine to the target's is at most this fraction of the decoders' cosine.
ABSORPTION_MAX_ENCODER_FRACTION = 0.5
ENCODER_DECODER_COLUMNS = ["feature", "role", "hookpoint", "rank", "other", "decoder_cos", "encoder_cos", "enc_dec_cos",
                           "decoder_norm", "absorption_mark"]


def _unit(vectors: torch.Tensor) -> torch.Tensor:
    return vectors / vectors.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(vectors.dtype).tiny)


def _directions(crosscoder: Crosscoder, hookpoint: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every feature's encoder column and decoder row, at one hookpoint or concatenated (F, X)."""
    W_enc_FPD = crosscoder.W_enc_PDF.detach().permute(2, 0, 1).float()
    W_dec_FPD = crosscoder.W_dec_FPD.detach().float()
    if hookpoint is None:
        return W_enc_FPD.flatten(1), W_dec_FPD.flatten(1)
    return W_enc_FPD[:, hookpoint], W_dec_FPD[:, hookpoint]


def similarity_to(crosscoder: Crosscoder, feature: int, hookpoint: int | None = None) -> pd.DataFrame:
    """Every feature's decoder and encoder cosine to `feature`'s, its own encoder-decoder cosine and
    its decoder norm, at one hookpoint index or over all of them (None)."""
    enc_FX, dec_FX = _directions(crosscoder, hookpoint)
    enc_unit_FX, dec_unit_FX = _unit(enc_FX), _unit(dec_FX)
    return pd.DataFrame(
        {
            "other": range(enc_FX.shape[0]),
            "decoder_cos": (dec_unit_FX @ dec_unit_FX[feature]).cpu().numpy(),
            "encoder_cos": (enc_unit_FX @ enc_unit_FX[feature]).cpu().numpy(),
            "enc_dec_cos": (enc_unit_FX * dec_unit_FX).sum(-1).cpu().numpy(),
            "decoder_norm": dec_FX.norm(dim=-1).cpu().numpy(),
        }
    )


def absorption_mark(decoder_cos: pd.Series, encoder_cos: pd.Series) -> pd.Series:
    """Similar decoder, different encoder."""
    return (decoder_cos >= ABSORPTION_MIN_DECODER_COS) & (encoder_cos <= ABSORPTION_MAX_ENCODER_FRACTION * decoder_cos)


def encoder_decoder_table(crosscoder: Crosscoder, selected: pd.DataFrame, n_neighbours: int = N_NEIGHBOURS) -> pd.DataFrame:
    """Per selected feature and hookpoint (and "all"): rank 0 is the feature itself (its
    encoder-decoder cosine and decoder norm), ranks 1.. its `n_neighbours` nearest decoder rows."""
    frames = []
    for row in selected.itertuples():
        feature = int(row.feature)
        for hookpoint, name in [(None, ALL_HOOKPOINTS), *enumerate(crosscoder.hookpoints)]:
            similarity = similarity_to(crosscoder, feature, hookpoint)
            itself = similarity.iloc[[feature]]
            others = similarity.drop(index=feature).nlargest(n_neighbours, "decoder_cos")
            rows = pd.concat([itself, others], ignore_index=True)
            frames.append(rows.assign(feature=feature, role=row.role, hookpoint=name, rank=range(len(rows))))
    table = pd.concat(frames, ignore_index=True)
    table["absorption_mark"] = absorption_mark(table["decoder_cos"], table["encoder_cos"]) & (table["rank"] > 0)
    return table[ENCODER_DECODER_COLUMNS]
