"""Several worlds in one run (config `worlds:`): every world's tables side by side.

Each world is a whole run of the pipeline with its own config and results folder; these functions
only read what the worlds wrote, so a cross-world table holds exactly the numbers of the worlds'
own summary.csv and findings.csv.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd


def stack_worlds(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """One table of every world's rows, in the config's order of worlds, with a `world` column first."""
    if not tables:
        raise ValueError("no worlds to stack")
    stacked = [table.assign(world=name) for name, table in tables.items()]
    combined = pd.concat(stacked, ignore_index=True)
    return combined[["world", *[column for column in combined.columns if column != "world"]]]


def verdicts_by_world(findings: pd.DataFrame) -> pd.DataFrame:
    """Finding by world: each finding's verdict in each world, from stack_worlds' findings table.

    Features differ between worlds (each selects its own), so a cell names the feature a verdict is
    about; where a world tested a finding on several features, its cell lists them all.
    """

    def cell(rows: pd.DataFrame) -> str:
        return "; ".join(
            verdict if pd.isna(feature) else f"{verdict} (feature {int(feature)})"
            for verdict, feature in zip(rows["verdict"], rows["feature"])
        )

    worlds = list(dict.fromkeys(findings["world"]))
    findings_order = list(dict.fromkeys(findings["finding"]))
    cells = findings.groupby(["finding", "world"], sort=False)[["verdict", "feature"]].apply(cell).unstack("world")
    claims = findings.drop_duplicates("finding").set_index("finding")["claim"]
    table = cells.reindex(index=findings_order, columns=worlds).fillna("not tested")
    return table.rename_axis(columns=None).assign(claim=claims).reset_index()[["finding", "claim", *worlds]]
