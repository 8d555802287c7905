"""Several worlds' tables side by side (config `worlds:`)."""

import pandas as pd
import pytest

from crosscoder_interventions.analysis.cross_world import stack_worlds, verdicts_by_world


def _findings(rows: list[tuple[str, str, float | None, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["finding", "claim", "feature", "verdict"])
    frame["feature"] = frame["feature"].astype("Int64")
    return frame


def test_stack_keeps_every_row_and_value_in_the_order_of_worlds():
    wide = pd.DataFrame({"method": ["a", "b"], "ce_mean": [1.5, 2.5]})
    narrow = pd.DataFrame({"method": ["a"], "ce_mean": [0.5]})
    stacked = stack_worlds({"wide": wide, "narrow": narrow})
    assert list(stacked.columns) == ["world", "method", "ce_mean"]
    assert stacked["world"].tolist() == ["wide", "wide", "narrow"]
    assert stacked["ce_mean"].tolist() == [1.5, 2.5, 0.5]
    assert "world" not in wide.columns  # the worlds' own tables are left alone


def test_stack_of_no_world_is_an_error():
    with pytest.raises(ValueError, match="no worlds"):
        stack_worlds({})


def test_verdicts_name_each_worlds_features_and_untested_findings():
    findings = stack_worlds({
        "narrow": _findings([("0", "premise", None, "holds"), ("1", "tag ablation", 117, "holds"), ("1", "tag ablation", 8, "does not hold")]),
        "wide": _findings([("0", "premise", None, "does not hold"), ("2", "steering", 825, "not applicable")]),
    })
    verdicts = verdicts_by_world(findings)
    assert list(verdicts.columns) == ["finding", "claim", "narrow", "wide"]
    assert verdicts["finding"].tolist() == ["0", "1", "2"]
    assert verdicts["claim"].tolist() == ["premise", "tag ablation", "steering"]
    assert verdicts["narrow"].tolist() == ["holds", "holds (feature 117); does not hold (feature 8)", "not tested"]
    assert verdicts["wide"].tolist() == ["does not hold", "not tested", "not applicable (feature 825)"]
