"""Encoder against decoder on a hand-built crosscoder whose cosines are known."""

import math

import pandas as pd
import pytest
import torch

from crosscoder_interventions.analysis.encoder_decoder import encoder_decoder_table, similarity_to
from crosscoder_interventions.dictionary.model import Crosscoder

HOOKPOINTS = ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post"]


@pytest.fixture
def crosscoder():
    e0, e1, e2 = torch.eye(3)
    model = Crosscoder(HOOKPOINTS, d_model=3, n_features=4)
    # (encoder at hookpoint 0, at 1), (decoder at 0, at 1) of each feature:
    # 0 reads e0 then e1, writes e0 at both; 1 writes what 0 writes but reads its opposite (absorption);
    # 2 is unrelated; 3 writes half of 0's direction and reads like 0.
    weights = [((e0, e1), (e0, e0)), ((-e0, -e0), (2 * e0, 2 * e0)), ((e2, e2), (e2, e2)), ((e0, e1), (e0 + e2, e0 + e2))]
    for feature, ((enc_0, enc_1), (dec_0, dec_1)) in enumerate(weights):
        model.W_enc_PDF.data[0, :, feature], model.W_enc_PDF.data[1, :, feature] = enc_0, enc_1
        model.W_dec_FPD.data[feature, 0], model.W_dec_FPD.data[feature, 1] = dec_0, dec_1
    return model


def test_cosines_per_hookpoint_and_over_all(crosscoder):
    whole = similarity_to(crosscoder, 0).set_index("other")
    assert whole["decoder_cos"].tolist() == pytest.approx([1.0, 1.0, 0.0, 1 / math.sqrt(2)])
    assert whole["encoder_cos"].tolist() == pytest.approx([1.0, -0.5, 0.0, 1.0])
    # Feature 0 reads e0 and e1 and writes e0 twice: cos((e0, e1), (e0, e0)) = 1/2.
    assert whole.loc[0, "enc_dec_cos"] == pytest.approx(0.5)
    assert whole.loc[1, "decoder_norm"] == pytest.approx(2 * math.sqrt(2))
    second = similarity_to(crosscoder, 0, hookpoint=1).set_index("other")
    assert second.loc[0, "enc_dec_cos"] == pytest.approx(0.0) and second.loc[3, "encoder_cos"] == pytest.approx(1.0)
    assert similarity_to(crosscoder, 0, hookpoint=0).loc[0, "enc_dec_cos"] == pytest.approx(1.0)


def test_table_ranks_neighbours_and_marks_absorption(crosscoder):
    selected = pd.DataFrame({"feature": [0], "role": ["ablate"], "reason": ["named in the config"]})
    table = encoder_decoder_table(crosscoder, selected, n_neighbours=2)
    assert table["hookpoint"].unique().tolist() == ["all", *HOOKPOINTS]
    assert len(table) == 3 * 3
    whole = table[table["hookpoint"] == "all"].set_index("rank")
    assert whole["other"].tolist() == [0, 1, 3]
    # Feature 1 writes what 0 writes but its encoder points the other way: the mark of absorption.
    # Feature 3's decoder is close too, but it reads what 0 reads: no mark; nor for the feature itself.
    assert whole["absorption_mark"].tolist() == [False, True, False]
