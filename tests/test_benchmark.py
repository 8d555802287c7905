"""The benchmark's bookkeeping (which settings, which ratios) and one tiny end-to-end timing run."""

import pandas as pd
import pytest
import torch
from tiny_world import device_dtype_params, load_tiny, random_crosscoder, random_texts, require_device, save_tiny_model

from crosscoder_interventions.benchmark import PLAIN, Timing, count_dispatches, representative_settings, time_generation, timing_table
from crosscoder_interventions.engine.interventions import (
    GradientSteering,
    ManyLayerAblation,
    PenalisedPerturbation,
    PerturbationClamping,
    SingleLayerAblation,
)
from crosscoder_interventions.hookpoints import hookpoint_names

SWEEPS = {
    "single_layer_ablation": {"values": [1, 2, 4]},
    "many_layer_ablation": {"values": [0.5, 1, 2, 4]},
    "perturbation_ablation": {"values": [0.01, 0.02, 0.04], "steps": 3},
    "single_layer_steering": {"values": [1, 2]},
    "many_layer_steering": {"values": [1, 2]},
    "perturbation_clamping": {"values": [0.01, 0.04], "steps": 3, "target": 5.0},
    "penalised_perturbation": {"values": [0, 1, 3], "lr": 0.02, "steps": 3},
    "gradient_ablation": {"values": [1, 2, 4]},
    "gradient_steering": {"values": [1, 2, 4]},
}


def test_representative_settings_are_the_middle_of_each_sweep():
    selected = pd.DataFrame({"feature": [7, 9], "role": ["ablate", "steer"], "reason": ["", ""]})
    settings = representative_settings(selected, SWEEPS, hookpoint_names(2))
    # single-layer sweeps run hookpoint-major: 3 hookpoints x 3 values, the middle is the 5th
    assert settings["single_layer_ablation"] == SingleLayerAblation(7, "blocks.0.hook_resid_post", 2.0)
    assert settings["many_layer_ablation"] == ManyLayerAblation(7, 2.0)
    assert settings["perturbation_clamping"] == PerturbationClamping(9, 5.0, 0.04, 3)
    assert settings["penalised_perturbation"] == PenalisedPerturbation(7, 1.0, 0.02, 3)
    assert settings["gradient_steering"] == GradientSteering(9, 2.0)
    assert len(settings) == 9
    ablate_only = representative_settings(selected.iloc[:1], SWEEPS, hookpoint_names(2))
    assert set(ablate_only) == {
        "single_layer_ablation", "many_layer_ablation", "perturbation_ablation", "penalised_perturbation", "gradient_ablation"
    }


def test_ratios_are_times_per_token_over_plain_and_over_the_fast_path():
    table = timing_table([
        Timing(PLAIN, "", 4, 40, 2.0, 400, 40, 10),
        Timing("many_layer_ablation", "m", 4, 40, 5.0, 2000, 80, 10),
        Timing("reference_many_layer_ablation", "m", 1, 10, 12.5, 5000, 10, 10),
    ]).set_index("entry")
    assert table["seconds_per_token"].tolist() == pytest.approx([0.05, 0.125, 1.25])
    assert table["operations_per_token"].tolist() == [10, 50, 500] and table["host_syncs_per_token"].tolist() == [1, 2, 1]
    assert table["operations_per_step"].tolist() == [40, 200, 500] and table["host_syncs_per_step"].tolist() == [4, 8, 1]
    assert table["ratio_to_plain"].tolist() == pytest.approx([1.0, 2.5, 25.0])
    assert table.loc["reference_many_layer_ablation", "ratio_to_fast"] == pytest.approx(10.0)
    assert table["ratio_to_fast"].isna().sum() == 2


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_dispatches_and_host_synchronisations_are_counted(device):
    """Three operations and one read of a value; a boolean mask's indexing waits too, an integer index's does not."""
    require_device(device)
    x = torch.arange(6.0, device=device)
    assert count_dispatches(lambda: (x * 2).sum().item(), torch.device(device)) == (3, 1)
    assert count_dispatches(lambda: x[x > 2], torch.device(device)) == (2, 1)
    assert count_dispatches(lambda: x[torch.tensor([0, 2], device=device)], torch.device(device))[1] == 0
    assert count_dispatches(lambda: torch.where(x > 2, x, 0.0).cumsum(0), torch.device(device)) == (4, 0)  # 0.0 becomes a tensor


@pytest.mark.parametrize("device_dtype", device_dtype_params())
def test_a_timing_run_covers_every_entry(tmp_path, device_dtype):
    """On every device and in every dtype: the plain entries' tokens and the oracle's follow the model."""
    device, dtype = device_dtype
    require_device(device)
    torch.set_num_threads(1)
    bridge = load_tiny(save_tiny_model(tmp_path), device=device, dtype=dtype)
    crosscoder = random_crosscoder(n_layers=4, d_model=32).to(device=device, dtype=getattr(torch, dtype))
    prompts = [bridge.tokenizer(text)["input_ids"][:n] for text, n in zip(random_texts(2, seed=1), [6, 9])]
    settings = {"many_layer_ablation": ManyLayerAblation(3, 1.0)}
    table = timing_table(time_generation(bridge, crosscoder, prompts, [0, 2], settings, max_new_tokens=2, reference_prompts=1, repeats=1))
    assert table["entry"].tolist() == [PLAIN, "hf_generate", "many_layer_ablation", "reference_many_layer_ablation"]
    assert table["new_tokens"].tolist() == [4, 4, 4, 2] and table["decode_steps"].tolist() == [2, 2, 2, 2]
    assert (table["seconds"] > 0).all()
    assert (table["operations_per_token"] > 10).all() and (table["host_syncs_per_token"] >= 0).all()
