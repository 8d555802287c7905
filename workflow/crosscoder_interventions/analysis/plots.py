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
    points = {feature: tuple(by_feature.loc[feature, ["mean_clean_all", "mean_deployment_all"]]) for feature in labels}
    for feature, offset in _label_offsets(ax, points).items():
        leader = None if offset == LABEL_OFFSETS[0] else {"arrowstyle": "-", "lw": 0.5, "color": "#8a1c2b", "shrinkA": 0, "shrinkB": 3}
        ax.annotate(str(feature), points[feature], xytext=offset, textcoords="offset points", fontsize=9, color="#8a1c2b", arrowprops=leader)
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


LABEL_OFFSETS = [(4, 4), (4, -12), (-24, 4), (-24, -12), (10, 14), (-30, 14), (10, -22), (-30, -22)]
LABEL_CLEARANCE = 20  # points between label anchors (Manhattan distance)


def _label_offsets(ax: plt.Axes, points: dict[int, tuple[float, float]]) -> dict[int, tuple[int, int]]:
    """First-fit label placement: each label takes the nearest candidate offset that keeps it clear
    of the labels already placed and inside the axes, so that neighbouring ids stay legible."""
    fig = ax.figure
    fig.canvas.draw()
    to_points = 72 / fig.dpi
    x_min, y_min, x_max, y_max = (value * to_points for value in ax.get_window_extent().extents)
    placed: list[tuple[float, float]] = []
    offsets = {}
    for feature, xy in sorted(points.items(), key=lambda item: item[1]):
        x_px, y_px = ax.transData.transform(xy)
        anchor = (x_px * to_points, y_px * to_points)

        def fits(offset: tuple[int, int]) -> bool:
            x, y = anchor[0] + offset[0], anchor[1] + offset[1]  # noqa: B023 (called within this iteration)
            inside = x_min <= x and x + 20 <= x_max and y_min <= y and y + 10 <= y_max
            return inside and all(abs(x - px) + abs(y - py) >= LABEL_CLEARANCE for px, py in placed)

        offset = next((candidate for candidate in LABEL_OFFSETS if fits(candidate)), LABEL_OFFSETS[0])
        offsets[feature] = offset
        placed.append((anchor[0] + offset[0], anchor[1] + offset[1]))
    return offsets


def activation_histogram(activations: pd.Series, feature: int, path: str | Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    sns.histplot(x=activations, bins=50, ax=ax, color="#d1495b")
    ax.set(yscale="log", xlabel=f"feature {feature} activation (non-zero only)", ylabel="tokens")
    ax.set_title(f"Feature {feature}: {len(activations):,} firing tokens")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
