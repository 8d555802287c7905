"""Replicates (config `replicates:`): which of the sprint's findings hold on every replicate of the
experiment, and which on some (docs/design.md, section 8). The tables are read from each replicate's own
findings.csv, so they hold exactly its verdicts and intervals.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from crosscoder_interventions.analysis.findings import FAILS, HOLDS, NOT_APPLICABLE, UNDECIDED  # noqa: E402

VERDICT_COLUMNS = ["replicate", "finding", "feature", "verdict", "estimate", "low", "high", "holds_share", "rule"]
VERDICTS = (HOLDS, UNDECIDED, FAILS, NOT_APPLICABLE)
VERDICT_COLOURS = {HOLDS: "#1a9850", UNDECIDED: "#fdae61", FAILS: "#d73027", NOT_APPLICABLE: "#bdbdbd"}


def replicate_verdicts(findings: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per replicate and finding (VERDICT_COLUMNS), replicates in the config's order."""
    if not findings:
        raise ValueError("no replicates to compare")
    frames = [table.assign(replicate=name) for name, table in findings.items()]
    return pd.concat(frames, ignore_index=True)[VERDICT_COLUMNS]


def robustness(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Per finding (in the findings' order), how many replicates gave each verdict, and the claim's
    standing over them: `robust` where it holds on every replicate that tests it."""
    counts = pd.crosstab(verdicts["finding"], verdicts["verdict"]).reindex(columns=list(VERDICTS), fill_value=0)
    counts = counts.reindex(list(dict.fromkeys(verdicts["finding"])))
    counts.columns = [verdict.replace(" ", "_") for verdict in VERDICTS]
    tested = counts[["holds", "undecided", "does_not_hold"]].sum(axis=1)
    counts["replicates"] = counts.sum(axis=1)
    counts["robust"] = (tested > 0) & (counts["holds"] == tested)
    return counts.rename_axis("finding").reset_index()


def robustness_figure(table: pd.DataFrame, path: str | Path) -> None:
    """Each finding's replicates by verdict, as stacked bars."""
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(table) + 1.2))
    left = pd.Series(0, index=table.index)
    for verdict in VERDICTS:
        column = verdict.replace(" ", "_")
        ax.barh(table["finding"], table[column], left=left, color=VERDICT_COLOURS[verdict], label=verdict)
        left = left + table[column]
    ax.invert_yaxis()
    ax.set(xlabel="replicates", title="Each finding's verdict over the replicates")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
