"""Figures (seaborn, PNG). Each function takes tidy tables and writes one file."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")


def discovery_scatter(candidates: pd.DataFrame, labels: dict[int, str], path: str | Path) -> None:
    """Deployment against clean mean activation per feature (symlog axes). Labelled features are
    marked by id on the plot and described in a panel beside it, so labels never pile up."""
    fig, (ax, legend_ax) = plt.subplots(1, 2, figsize=(12, 7), gridspec_kw={"width_ratios": [3, 2]})
    is_labelled = candidates["feature"].isin(list(labels))
    ax.scatter(candidates.loc[~is_labelled, "mean_clean_all"], candidates.loc[~is_labelled, "mean_deployment_all"],
               s=10, color="#9aa5b1", alpha=0.7, linewidths=0, label="feature")
    ax.scatter(candidates.loc[is_labelled, "mean_clean_all"], candidates.loc[is_labelled, "mean_deployment_all"],
               s=50, color="#d1495b", linewidths=0, label="labelled feature")
    limit = float(max(candidates["mean_clean_all"].max(), candidates["mean_deployment_all"].max())) * 1.5 or 1.0
    ax.plot([0, limit], [0, limit], ls="--", lw=1, color="black", label="equal means")
    means = candidates[["mean_clean_all", "mean_deployment_all"]].to_numpy().ravel()
    positive = means[means > 0]
    # Linear near zero, logarithmic from the smallest mean on: dead features sit at the origin.
    linear_below = float(positive.min()) if len(positive) else 1e-6
    ax.set_xscale("symlog", linthresh=linear_below)
    ax.set_yscale("symlog", linthresh=linear_below)
    ax.set_xlim(0, limit)
    ax.set_ylim(0, limit)
    by_feature = candidates.set_index("feature")
    for feature in labels:
        x, y = by_feature.loc[feature, ["mean_clean_all", "mean_deployment_all"]]
        ax.annotate(str(feature), (x, y), xytext=(4, 4), textcoords="offset points", fontsize=9, color="#8a1c2b")
    ax.set_xlabel("mean activation, clean examples (all tokens)")
    ax.set_ylabel("mean activation, deployment examples (all tokens)")
    ax.set_title("Crosscoder features: deployment vs clean")
    ax.legend(loc="upper left")
    legend_ax.axis("off")
    legend_ax.text(0, 1, "Labelled features\n\n" + "\n".join(labels[feature] for feature in sorted(labels)),
                   va="top", ha="left", fontsize=9, family="monospace", transform=legend_ax.transAxes, wrap=True)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def activation_histogram(activations: pd.Series, feature: int, path: str | Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    sns.histplot(x=activations, bins=50, ax=ax, color="#d1495b")
    ax.set(yscale="log", xlabel=f"feature {feature} activation (non-zero only)", ylabel="tokens")
    ax.set_title(f"Feature {feature}: {len(activations):,} firing tokens")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
