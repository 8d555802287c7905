"""The crosscoder's maths (docs/design.md, section 2), its crosscode checkpoint format and its quality metrics."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from crosscoder_interventions.dictionary.checkpoints import load_crosscoder, save_crosscode_checkpoint
from crosscoder_interventions.dictionary.model import Crosscoder
from crosscoder_interventions.dictionary.reconstruction import reconstruction_stats, span_detection
from crosscoder_interventions.errors import ConfigError

P, D, F = 3, 6, 10
HOOKPOINTS = ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
SCALING_P = torch.tensor([0.25, 2.0, 7.5])
EXPECTED_SHAPES = {
    "_W_enc_XiDiL": (1, P, D, F),
    "_W_dec_LXoDo": (F, 1, P, D),
    "b_enc_L": (F,),
    "_b_dec_XoDo": (1, P, D),
    "_activation_fn.log_threshold_L": (F,),
    "folded_scaling_factors_in_Xi": (1, P),
    "folded_scaling_factors_out_Xo": (1, P),
    "is_folded": (),
}


def random_crosscoder(seed: int = 0) -> Crosscoder:
    generator = torch.Generator().manual_seed(seed)
    crosscoder = Crosscoder(HOOKPOINTS, D, F)
    with torch.no_grad():
        crosscoder.W_enc_PDF.copy_(torch.randn(P, D, F, generator=generator) / math.sqrt(P * D))
        crosscoder.b_enc_F.copy_(0.3 * torch.randn(F, generator=generator))
        crosscoder.W_dec_FPD.copy_(torch.randn(F, P, D, generator=generator))
        crosscoder.b_dec_PD.copy_(torch.randn(P, D, generator=generator))
        crosscoder.log_threshold_F.copy_(torch.log(0.2 + torch.rand(F, generator=generator)))
    return crosscoder


def random_acts(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, P, D, generator=torch.Generator().manual_seed(seed))


def literal_encode_pre(crosscoder: Crosscoder, acts_BPD: torch.Tensor) -> torch.Tensor:
    """h(t) = sum_p x_p(t) @ W_enc[p] + b_enc, one position and one hookpoint at a time."""
    rows = []
    for t in range(acts_BPD.shape[0]):
        h = crosscoder.b_enc_F.detach().clone()
        for p in range(acts_BPD.shape[1]):
            h = h + acts_BPD[t, p] @ crosscoder.W_enc_PDF.detach()[p]
        rows.append(h)
    return torch.stack(rows)


def literal_encode(crosscoder: Crosscoder, acts_BPD: torch.Tensor) -> torch.Tensor:
    h = literal_encode_pre(crosscoder, acts_BPD)
    theta = torch.exp(crosscoder.log_threshold_F.detach())
    f = torch.zeros_like(h)
    for t in range(h.shape[0]):
        for i in range(h.shape[1]):
            if h[t, i] > theta[i]:
                f[t, i] = h[t, i]
    return f


def literal_decode(crosscoder: Crosscoder, f_BF: torch.Tensor) -> torch.Tensor:
    """xhat_p(t) = f(t) @ W_dec[:, p] + b_dec[p]."""
    out = torch.zeros(f_BF.shape[0], P, D)
    for t in range(f_BF.shape[0]):
        for p in range(P):
            out[t, p] = f_BF[t] @ crosscoder.W_dec_FPD.detach()[:, p] + crosscoder.b_dec_PD.detach()[p]
    return out


def test_maths_match_the_literal_definitions():
    crosscoder = random_crosscoder()
    acts_BPD = random_acts(16)
    f_expected = literal_encode(crosscoder, acts_BPD)
    on = (f_expected != 0).float().mean().item()
    assert 0.15 < on < 0.85  # the thresholds switch some features off and leave others on
    with torch.no_grad():
        torch.testing.assert_close(crosscoder.encode_pre(acts_BPD), literal_encode_pre(crosscoder, acts_BPD), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(crosscoder.encode(acts_BPD), f_expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(crosscoder.decode(f_expected), literal_decode(crosscoder, f_expected), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(crosscoder(acts_BPD), literal_decode(crosscoder, f_expected), atol=1e-5, rtol=1e-5)


def test_leading_batch_dimensions_are_allowed():
    crosscoder = random_crosscoder()
    acts_BSPD = random_acts(12).reshape(3, 4, P, D)
    with torch.no_grad():
        f_BSF = crosscoder.encode(acts_BSPD)
        assert f_BSF.shape == (3, 4, F)
        torch.testing.assert_close(f_BSF.reshape(12, F), crosscoder.encode(acts_BSPD.reshape(12, P, D)))
        assert crosscoder.decode(f_BSF).shape == (3, 4, P, D)


def test_wrong_activation_shape_is_rejected():
    with pytest.raises(ValueError, match="expected activations of shape"):
        random_crosscoder().encode(torch.zeros(2, P + 1, D))


def test_gradients_flow_through_encode_pre_and_active_features():
    crosscoder = random_crosscoder()
    acts_BPD = random_acts(4).requires_grad_()
    crosscoder.encode(acts_BPD).sum().backward()
    assert acts_BPD.grad is not None and acts_BPD.grad.abs().sum() > 0


@pytest.mark.parametrize("folded", [True, False])
def test_checkpoint_round_trip(tmp_path, folded):
    crosscoder = random_crosscoder()
    save_crosscode_checkpoint(crosscoder, tmp_path / "cc", scaling_factors_P=SCALING_P, folded=folded, bandwidth=1.5)
    state = torch.load(tmp_path / "cc" / "model.pt", weights_only=True)
    assert {key: tuple(value.shape) for key, value in state.items()} == EXPECTED_SHAPES
    assert state["is_folded"].dtype == torch.bool and bool(state["is_folded"]) is folded
    assert all(value.dtype == torch.float32 for key, value in state.items() if key != "is_folded")
    torch.testing.assert_close(state["folded_scaling_factors_in_Xi"], SCALING_P[None])
    cfg = yaml.safe_load((tmp_path / "cc" / "model_cfg.yaml").read_text())
    assert cfg["n_models"] == 1 and cfg["hookpoints"] == HOOKPOINTS and cfg["n_hookpoints"] == P
    assert (cfg["d_model"], cfg["n_latents"]) == (D, F)
    assert cfg["activation_fn"] == {"classname": "AnthropicSTEJumpReLUActivation", "cfg": {"size": F, "bandwidth": 1.5}}
    assert cfg["use_encoder_bias"] is True and cfg["use_decoder_bias"] is True

    loaded = load_crosscoder(tmp_path / "cc")
    assert loaded.hookpoints == HOOKPOINTS
    acts_BPD = random_acts(32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_pre(acts_BPD), crosscoder.encode_pre(acts_BPD), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(loaded.encode(acts_BPD), crosscoder.encode(acts_BPD), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(loaded(acts_BPD), crosscoder(acts_BPD), atol=1e-4, rtol=1e-5)


def test_folded_means_weights_on_raw_activations(tmp_path):
    """The library's semantics: unfolded weights read s_p * x_p; folding makes them read x_p."""
    crosscoder = random_crosscoder()
    save_crosscode_checkpoint(crosscoder, tmp_path / "unfolded", scaling_factors_P=SCALING_P, folded=False)
    save_crosscode_checkpoint(crosscoder, tmp_path / "folded", scaling_factors_P=SCALING_P, folded=True)
    unfolded = torch.load(tmp_path / "unfolded" / "model.pt", weights_only=True)
    folded = torch.load(tmp_path / "folded" / "model.pt", weights_only=True)
    torch.testing.assert_close(folded["_W_enc_XiDiL"][0], crosscoder.W_enc_PDF.detach())
    torch.testing.assert_close(unfolded["_W_enc_XiDiL"][0], crosscoder.W_enc_PDF.detach() / SCALING_P[:, None, None])
    torch.testing.assert_close(unfolded["_W_dec_LXoDo"][:, 0], crosscoder.W_dec_FPD.detach() * SCALING_P[None, :, None])
    torch.testing.assert_close(unfolded["_b_dec_XoDo"][0], crosscoder.b_dec_PD.detach() * SCALING_P[:, None])
    torch.testing.assert_close(unfolded["b_enc_L"], folded["b_enc_L"])
    # Unfolded weights applied literally to scaled activations reconstruct the scaled activations.
    acts_BPD = random_acts(8)
    scaled_BPD = acts_BPD * SCALING_P[:, None]
    h_BF = torch.einsum("bpd,pdf->bf", scaled_BPD, unfolded["_W_enc_XiDiL"][0]) + unfolded["b_enc_L"]
    f_BF = h_BF * (h_BF > unfolded["_activation_fn.log_threshold_L"].exp())
    recon_BPD = torch.einsum("bf,fpd->bpd", f_BF, unfolded["_W_dec_LXoDo"][:, 0]) + unfolded["_b_dec_XoDo"][0]
    with torch.no_grad():
        torch.testing.assert_close(f_BF, crosscoder.encode(acts_BPD), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(recon_BPD, crosscoder(acts_BPD) * SCALING_P[:, None], atol=1e-4, rtol=1e-5)


def test_unfolded_library_checkpoint_with_zero_buffers_takes_factors_from_a_normalisation_file(tmp_path):
    crosscoder = random_crosscoder()
    directory = save_crosscode_checkpoint(crosscoder, tmp_path / "cc", scaling_factors_P=SCALING_P, folded=False)
    state = torch.load(directory / "model.pt", weights_only=True)
    state["folded_scaling_factors_in_Xi"].zero_()  # what the library itself leaves in unfolded checkpoints
    state["folded_scaling_factors_out_Xo"].zero_()
    torch.save(state, directory / "model.pt")
    torch.save({"scaling_factors": SCALING_P[None]}, tmp_path / "norm.pt")  # a leading model dimension is allowed
    acts_BPD = random_acts(8)
    with torch.no_grad():
        loaded = load_crosscoder(directory, normalisation=tmp_path / "norm.pt")
        torch.testing.assert_close(loaded(acts_BPD), crosscoder(acts_BPD), atol=1e-4, rtol=1e-5)
        assumed_raw = load_crosscoder(directory)  # no factors anywhere: taken as trained on raw activations
        torch.testing.assert_close(assumed_raw.W_enc_PDF, crosscoder.W_enc_PDF / SCALING_P[:, None, None])


@pytest.mark.parametrize("fmt", ["crosscode", "model-diffing"])
def test_normalisation_with_a_mean_is_folded_so_raw_activations_give_the_normalised_results(tmp_path, fmt):
    """A crosscoder N trained on y_p = s_p * (x_p - mu_p): loaded with the file of s and mu, it reads
    raw x and gives f(x) = f_N(y) and xhat_p = yhat_p / s_p + mu_p."""
    from safetensors.torch import save_file
    from tiny_world import save_model_diffing_checkpoint

    normalised = random_crosscoder(seed=3)
    mean_PD = torch.randn(P, D, generator=torch.Generator().manual_seed(4))
    if fmt == "crosscode":
        # save_crosscode_checkpoint takes raw-activation weights and unfolds them: scale up first.
        from crosscoder_interventions.dictionary.model import fold_scaling

        raw_scaled = fold_scaling(random_crosscoder(seed=3), SCALING_P)
        directory = save_crosscode_checkpoint(raw_scaled, tmp_path / "cc", scaling_factors_P=SCALING_P, folded=False)
        _edit_state(directory, lambda s: (s["folded_scaling_factors_in_Xi"].zero_(), s["folded_scaling_factors_out_Xo"].zero_()))
    else:
        directory = save_model_diffing_checkpoint(normalised, tmp_path / "cc", scaling_factors_P=None, folded=False)
    save_file({"scaling_factors": SCALING_P, "mean": mean_PD}, tmp_path / "norm.safetensors")
    loaded = load_crosscoder(directory, normalisation=tmp_path / "norm.safetensors")

    acts_BPD = 3.0 * random_acts(64) + mean_PD
    normalised_BPD = SCALING_P[:, None] * (acts_BPD - mean_PD)
    with torch.no_grad():
        f_expected = normalised.encode(normalised_BPD)
        assert 0.1 < (f_expected != 0).float().mean() < 0.9
        torch.testing.assert_close(loaded.encode_pre(acts_BPD), normalised.encode_pre(normalised_BPD), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(loaded.encode(acts_BPD), f_expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(loaded.decode(f_expected), normalised.decode(f_expected) / SCALING_P[:, None] + mean_PD, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("folded", "cfg_fname", "threshold_key"), [
    (True, "model_cfg.yaml", "hidden_activation.log_threshold_H"),
    (False, "model.cfg", "hidden_activation.log_threshold_H"),
    (True, "model_cfg.yaml", "hidden_activation.log_threshold_L"),
])
def test_model_diffing_checkpoints_load(tmp_path, folded, cfg_fname, threshold_key):
    """The predecessor library's format: detected from its keys, folded or not (then its factors come
    from a normalisation file), with either config file name and threshold key it has used."""
    from tiny_world import save_model_diffing_checkpoint

    from crosscoder_interventions.dictionary.checkpoints import checkpoint_info
    from crosscoder_interventions.dictionary.model import unfold_scaling



    raw = random_crosscoder(seed=5)
    stored = random_crosscoder(seed=5) if folded else unfold_scaling(random_crosscoder(seed=5), SCALING_P)
    directory = save_model_diffing_checkpoint(
        stored, tmp_path / "md", scaling_factors_P=SCALING_P, folded=folded, cfg_fname=cfg_fname, threshold_key=threshold_key
    )
    assert "!!python/tuple" in (directory / cfg_fname).read_text()  # yaml.dump of the library's tuple
    torch.save({"scaling_factors": SCALING_P}, tmp_path / "norm.pt")
    loaded = load_crosscoder(directory, normalisation=tmp_path / "norm.pt")
    info = checkpoint_info(directory)
    assert (info.format, info.hookpoints, info.d_model, info.n_features) == ("model-diffing", HOOKPOINTS, D, F)
    acts_BPD = random_acts(32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(acts_BPD), raw.encode(acts_BPD), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(loaded(acts_BPD), raw(acts_BPD), atol=1e-4, rtol=1e-5)


def test_folded_checkpoint_with_different_factors_in_the_normalisation_file_is_an_error(tmp_path):
    directory = save_crosscode_checkpoint(random_crosscoder(), tmp_path / "cc", scaling_factors_P=SCALING_P, folded=True)
    torch.save({"scaling_factors": 2 * SCALING_P}, tmp_path / "norm.pt")
    with pytest.raises(ConfigError, match="already has scaling factors .* folded in"):
        load_crosscoder(directory, normalisation=tmp_path / "norm.pt")
    torch.save({"scaling_factors": SCALING_P, "mean": torch.zeros(P, D)}, tmp_path / "same.pt")
    load_crosscoder(directory, normalisation=tmp_path / "same.pt")  # the factors it carries: not folded twice


def test_checkpoint_in_neither_format_lists_the_keys_of_both(tmp_path):
    directory = save_crosscode_checkpoint(random_crosscoder(), tmp_path / "cc", scaling_factors_P=None, folded=True)
    torch.save({"encoder.weight": torch.zeros(2, 2)}, directory / "model.pt")
    with pytest.raises(ConfigError) as raised:
        load_crosscoder(directory)
    message = str(raised.value)
    assert "\n" not in message and "neither known checkpoint format" in message and "'encoder.weight'" in message
    assert "'_W_enc_XiDiL'" in message and "'W_enc_XDH'" in message and "'hidden_activation.log_threshold_H'" in message


@pytest.mark.parametrize(("content", "message"), [
    ({"scale": torch.ones(P)}, "expected the keys scaling_factors"),
    ({"scaling_factors": torch.ones(P + 1)}, "'scaling_factors' has shape"),
    ({"scaling_factors": -torch.ones(P)}, "non-positive"),
    ({"mean": torch.ones(P, D + 1)}, "'mean' has shape"),
])
def test_bad_normalisation_files(tmp_path, content, message):
    directory = save_crosscode_checkpoint(random_crosscoder(), tmp_path / "cc", scaling_factors_P=None, folded=False)
    torch.save(content, tmp_path / "norm.pt")
    with pytest.raises(ConfigError, match=message):
        load_crosscoder(directory, normalisation=tmp_path / "norm.pt")


def test_dtype_reaches_the_crosscoder(tmp_path):
    directory = save_crosscode_checkpoint(random_crosscoder(), tmp_path / "cc", scaling_factors_P=None, folded=True)
    assert load_crosscoder(directory, dtype="bfloat16").W_dec_FPD.dtype == torch.bfloat16


def test_checkpoint_without_decoder_bias_loads(tmp_path):
    crosscoder = random_crosscoder()
    directory = save_crosscode_checkpoint(crosscoder, tmp_path / "cc", scaling_factors_P=None, folded=True)
    state = torch.load(directory / "model.pt", weights_only=True)
    del state["_b_dec_XoDo"]
    torch.save(state, directory / "model.pt")
    cfg = yaml.safe_load((directory / "model_cfg.yaml").read_text())
    cfg["use_decoder_bias"] = False
    (directory / "model_cfg.yaml").write_text(yaml.safe_dump(cfg))
    loaded = load_crosscoder(directory)
    assert torch.equal(loaded.b_dec_PD, torch.zeros(P, D))
    torch.testing.assert_close(loaded.W_dec_FPD, crosscoder.W_dec_FPD)


def _edit_state(directory, edit):
    state = torch.load(directory / "model.pt", weights_only=True)
    edit(state)
    torch.save(state, directory / "model.pt")


def _edit_cfg(directory, edit):
    cfg = yaml.safe_load((directory / "model_cfg.yaml").read_text())
    edit(cfg)
    (directory / "model_cfg.yaml").write_text(yaml.safe_dump(cfg))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "model.pt").unlink(), "lacks model.pt"),
        (lambda d: (d / "model_cfg.yaml").unlink(), "lacks model_cfg.yaml"),
        (lambda d: _edit_state(d, lambda s: s.update(extra=torch.zeros(1))), "unexpected keys \\['extra'\\]"),
        (lambda d: _edit_state(d, lambda s: s.pop("b_enc_L")), "missing keys \\['b_enc_L'\\]"),
        (lambda d: _edit_state(d, lambda s: s.update(b_enc_L=torch.zeros(F + 1))), "'b_enc_L' has shape \\(11,\\); expected \\(10,\\)"),
        (lambda d: _edit_cfg(d, lambda c: c.update(n_latents=F + 2)), "has shape"),
        (lambda d: _edit_cfg(d, lambda c: c.update(n_models=2)), "n_models"),
        (lambda d: _edit_cfg(d, lambda c: c.update(activation_fn={"classname": "GroupMaxActivation", "cfg": {}})), "GroupMaxActivation"),
        (lambda d: (d / "model_cfg.yaml").write_text("!!python/object/apply:os.system ['true']\n"), "not plain YAML"),
        (lambda d: (d / "model.pt").write_bytes(b"not a pickle"), "cannot be read"),
    ],
)
def test_bad_checkpoints_raise_one_line_config_errors(tmp_path, damage, message):
    directory = save_crosscode_checkpoint(random_crosscoder(), tmp_path / "cc", scaling_factors_P=SCALING_P, folded=True)
    damage(directory)
    with pytest.raises(ConfigError, match=message) as raised:
        load_crosscoder(directory)
    assert "\n" not in str(raised.value)


def test_missing_directory_raises_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not a directory"):
        load_crosscoder(tmp_path / "nowhere")


def test_reconstruction_stats_against_direct_formulas():
    crosscoder = random_crosscoder()
    acts_NPD = random_acts(50) * torch.tensor([1.0, 3.0, 0.5])[:, None]
    stats = reconstruction_stats(crosscoder, acts_NPD, batch_size=7)
    with torch.no_grad():
        f_NF = crosscoder.encode(acts_NPD)
        error_NPD = crosscoder(acts_NPD) - acts_NPD
    deviation_NPD = acts_NPD - acts_NPD.mean(0)
    fvu_P = error_NPD.square().sum((0, 2)) / deviation_NPD.square().sum((0, 2))
    assert stats["fvu"] == pytest.approx(float(error_NPD.square().sum() / deviation_NPD.square().sum()), rel=1e-5)
    assert list(stats["fvu_per_hookpoint"]) == HOOKPOINTS
    assert list(stats["fvu_per_hookpoint"].values()) == pytest.approx(fvu_P.tolist(), rel=1e-5)
    assert stats["mean_l0"] == pytest.approx(float((f_NF != 0).sum(1).float().mean()))
    assert stats["dead_fraction"] == pytest.approx(float((f_NF == 0).all(0).float().mean()))
    assert stats["n_tokens"] == 50


def test_reconstruction_stats_of_a_perfect_and_a_dead_crosscoder():
    crosscoder = random_crosscoder()
    with torch.no_grad():
        crosscoder.log_threshold_F.fill_(30.0)  # nothing ever fires
        crosscoder.b_dec_PD.copy_(torch.randn(P, D))
    constant_NPD = crosscoder.b_dec_PD.detach().expand(20, P, D) + 1e-3 * random_acts(20)
    stats = reconstruction_stats(crosscoder, constant_NPD, batch_size=64)
    assert stats["dead_fraction"] == 1.0 and stats["mean_l0"] == 0.0
    assert stats["fvu"] > 0.5  # only noise around b_dec is left, none of it explained
    with torch.no_grad():
        crosscoder.b_dec_PD.copy_(constant_NPD.mean(0))
    assert reconstruction_stats(crosscoder, constant_NPD, batch_size=64)["fvu"] == pytest.approx(1.0, rel=1e-4)


def test_span_detection_finds_the_feature_that_fires_on_labelled_positions():
    crosscoder = random_crosscoder()
    acts_NPD = random_acts(200)
    with torch.no_grad():
        f_NF = crosscoder.encode(acts_NPD)
    labels_N = f_NF[:, 3] > 0
    result = span_detection(crosscoder, acts_NPD, labels_N, batch_size=16)
    assert result["feature"] == 3 and result["f1"] == pytest.approx(1.0)
    assert result["precision"] == pytest.approx(1.0) and result["recall"] == pytest.approx(1.0)
    assert {entry["feature"] for entry in result["specific_features"]} >= {3}
    assert result["specific_union_recall"] == pytest.approx(1.0)
    assert all(entry["precision"] >= 0.8 for entry in result["specific_features"])


def test_span_detection_union_of_partial_detectors():
    crosscoder = random_crosscoder()
    acts_NPD = random_acts(300)
    with torch.no_grad():
        f_NF = crosscoder.encode(acts_NPD)
    labels_N = (f_NF[:, 3] > 0) | (f_NF[:, 5] > 0)
    result = span_detection(crosscoder, acts_NPD, labels_N, batch_size=64, min_precision=1.0, min_recall=0.0)
    assert {3, 5} <= {entry["feature"] for entry in result["specific_features"]}
    assert result["specific_union_recall"] == pytest.approx(1.0)
    expected_recall = float(((f_NF[:, 3] > 0) & labels_N).sum() / labels_N.sum())
    entry = next(entry for entry in result["specific_features"] if entry["feature"] == 3)
    assert entry["recall"] == pytest.approx(expected_recall) and entry["precision"] == 1.0


def test_library_yaml_tags_are_read_as_data_not_run(tmp_path):
    crosscoder = random_crosscoder()
    directory = save_crosscode_checkpoint(crosscoder, tmp_path / "cc", scaling_factors_P=SCALING_P, folded=True)
    text = (directory / "model_cfg.yaml").read_text().replace("dtype: float32", "dtype: !!python/name:torch.float32 ''")
    text += "extra_shape: !!python/tuple [1, 2]\n"
    (directory / "model_cfg.yaml").write_text(text)
    loaded = load_crosscoder(directory)
    torch.testing.assert_close(loaded.W_enc_PDF, crosscoder.W_enc_PDF)
