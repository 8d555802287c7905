"""The tables of a `replicates:` run, from hand-made findings tables."""

import pandas as pd

from crosscoder_interventions.analysis.replicates import replicate_verdicts, robustness, robustness_figure


def findings(verdicts: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({
        "finding": list(verdicts), "feature": [7] * len(verdicts), "verdict": list(verdicts.values()), "estimate": 0.5, "low": 0.4,
        "high": 0.6, "holds_share": 0.99, "rule": "a rule", "claim": "a claim",
    })


REPLICATES = {
    "world_seed_0": findings({"0": "holds", "2b": "holds", "3a": "undecided", "8": "not applicable"}),
    "world_seed_1": findings({"0": "holds", "2b": "does not hold", "3a": "holds", "8": "not applicable"}),
    "world_seed_2": findings({"0": "holds", "2b": "holds", "3a": "holds", "8": "not applicable"}),
}


def test_verdicts_stack_every_replicates_rows_in_order():
    verdicts = replicate_verdicts(REPLICATES)
    assert verdicts.columns.tolist()[:4] == ["replicate", "finding", "feature", "verdict"]
    assert verdicts["replicate"].tolist() == ["world_seed_0"] * 4 + ["world_seed_1"] * 4 + ["world_seed_2"] * 4
    assert "claim" not in verdicts.columns


def test_robustness_counts_each_findings_verdicts_and_calls_robust_only_what_always_holds(tmp_path):
    table = robustness(replicate_verdicts(REPLICATES)).set_index("finding")
    assert table.index.tolist() == ["0", "2b", "3a", "8"]
    assert table.loc["2b", ["holds", "undecided", "does_not_hold", "not_applicable", "replicates"]].tolist() == [2, 0, 1, 0, 3]
    assert table.loc["3a", ["holds", "undecided"]].tolist() == [2, 1]
    assert table["robust"].tolist() == [True, False, False, False]  # 8 is tested nowhere
    robustness_figure(table.reset_index(), tmp_path / "robustness.png")
    assert (tmp_path / "robustness.png").stat().st_size > 5_000
