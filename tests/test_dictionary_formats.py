"""Activations other than JumpReLU, and the dictionary_learning and SAELens checkpoint formats.

Checkpoints are written as the libraries write them (their files, not the libraries, which the tests
do not install); each loaded `Crosscoder` is compared with the library's own arithmetic, written out
here from its source: dictionary_learning's `CrossCoder` / `BatchTopKCrossCoder.encode` and SAELens's
standard, jumprelu and topk `encode`.

Shape letters: B batch, L the libraries' layer axis (hookpoints), D d_model, F features.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file
from tiny_world import save_saelens

from crosscoder_interventions.dictionary.checkpoints import checkpoint_info, load_crosscoder
from crosscoder_interventions.dictionary.model import BatchTopK, Crosscoder, JumpReLU, ReLU, SignedTopK, TopK
from crosscoder_interventions.errors import ConfigError
from crosscoder_interventions.hookpoints import hookpoint_names

L, D, F, B = 3, 5, 12, 40


def random_tensors(seed: int, **shapes: tuple[int, ...]) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=generator) for name, shape in shapes.items()}


# --- activations ------------------------------------------------------------------------------------


def test_activations_gate_the_pre_activation():
    pre_BF = torch.tensor([[3.0, -1.0, 0.5, 2.0, 0.2], [-2.0, -1.0, -0.5, 0.1, -3.0]])
    log_threshold_F = torch.tensor([0.0, 0.0, 0.0, 1.0, -math.inf])  # thresholds 1, 1, 1, e, 0
    expected = {
        JumpReLU(): [[3.0, 0.0, 0.0, 0.0, 0.2], [0.0, 0.0, 0.0, 0.0, 0.0]],
        BatchTopK(k=2): [[3.0, 0.0, 0.0, 0.0, 0.2], [0.0, 0.0, 0.0, 0.0, 0.0]],
        ReLU(): [[3.0, 0.0, 0.5, 2.0, 0.2], [0.0, 0.0, 0.0, 0.1, 0.0]],
        # The two largest, and only if positive: the second row's top 2 are 0.1 and -0.5.
        TopK(2): [[3.0, 0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.1, 0.0]],
    }
    for activation, f_BF in expected.items():
        torch.testing.assert_close(activation(pre_BF, log_threshold_F), torch.tensor(f_BF), atol=0, rtol=0)
    assert ReLU().per_feature and BatchTopK().per_feature and not TopK(2).per_feature


def test_topk_feature_outside_the_top_k_has_no_gradient():
    """What the perturbation ablation relies on: a feature TopK gates off neither acts nor pulls."""
    crosscoder = Crosscoder(["a"], D, F, activation=TopK(3))
    with torch.no_grad():
        crosscoder.W_enc_PDF.copy_(random_tensors(0, w=(1, D, F))["w"])
    x_1PD = random_tensors(1, x=(1, 1, D))["x"].requires_grad_(True)
    f_1F = crosscoder.encode(x_1PD)
    assert int((f_1F != 0).sum()) == 3
    off, on = int((f_1F[0] == 0).nonzero()[0, 0]), int(f_1F[0].argmax())
    (grad_off,) = torch.autograd.grad(f_1F[0, off], x_1PD, retain_graph=True)
    (grad_on,) = torch.autograd.grad(f_1F[0, on], x_1PD)
    assert grad_off.abs().max() == 0
    torch.testing.assert_close(grad_on[0], crosscoder.W_enc_PDF[:, :, on])


# --- dictionary_learning ----------------------------------------------------------------------------


def save_dictionary_learning(directory, state: dict[str, torch.Tensor], dict_class: str, **trainer: object):
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(state, directory / "ae.pt")
    config = {"trainer": {"dict_class": dict_class, "trainer_class": "CrossCoderTrainer", "activation_dim": D, "dict_size": F,
                          "lr": 1e-3, "layer": 1, "lm_name": "tiny", "wandb_name": "run", **trainer}}
    (directory / "config.json").write_text(json.dumps(config, indent=4))
    return directory


def crosscoder_state(seed: int) -> dict[str, torch.Tensor]:
    return random_tensors(seed, **{"encoder.weight": (L, D, F), "encoder.bias": (F,), "decoder.weight": (L, F, D), "decoder.bias": (L, D)})


def library_crosscoder_encode(state: dict[str, torch.Tensor], x_BLD: torch.Tensor) -> torch.Tensor:
    """dictionary_learning's CrossCoderEncoder: relu(sum_l x_l W_l + b)."""
    return torch.relu(torch.einsum("bld,ldf->bf", x_BLD, state["encoder.weight"]) + state["encoder.bias"])


def library_crosscoder_decode(state: dict[str, torch.Tensor], f_BF: torch.Tensor) -> torch.Tensor:
    return torch.einsum("bf,lfd->bld", f_BF, state["decoder.weight"]) + state["decoder.bias"]


def test_dictionary_learning_crosscoder_is_a_relu_crosscoder(tmp_path):
    state = crosscoder_state(0)
    directory = save_dictionary_learning(tmp_path / "cc", state, "CrossCoder")
    info = checkpoint_info(directory)
    assert (info.format, info.hookpoints, info.d_model, info.n_features, info.activation) == (
        "dictionary_learning", hookpoint_names(L - 1), D, F, "relu"
    )
    crosscoder = load_crosscoder(directory)
    x_BLD = random_tensors(1, x=(B, L, D))["x"]
    f_BF = crosscoder.encode(x_BLD)
    torch.testing.assert_close(f_BF, library_crosscoder_encode(state, x_BLD))
    assert 0 < int((f_BF > 0).sum()) < f_BF.numel()
    torch.testing.assert_close(crosscoder.decode(f_BF), library_crosscoder_decode(state, f_BF))


@pytest.mark.parametrize("code_normalisation", ["CROSSCODER", "SAE", "NONE"])
def test_batchtopk_crosscoder_uses_its_learnt_threshold_before_folding(tmp_path, code_normalisation):
    """BatchTopKCrossCoder.encode(use_threshold=True): relu(h) where relu(h) * n > threshold, n the
    code normalisation of the weights as saved; with a normalisation file (trained on s * x) the
    loaded crosscoder reads raw x."""
    from crosscoder_interventions.dictionary.checkpoints import DL_CODE_NORMALISATIONS

    state = crosscoder_state(2)
    norms_F = {
        "CROSSCODER": state["decoder.weight"].norm(dim=2).sum(0),
        "SAE": state["decoder.weight"].permute(1, 0, 2).flatten(1).norm(dim=1),
        "NONE": torch.ones(F),
    }[code_normalisation]
    x_BLD = random_tensors(3, x=(B, L, D))["x"]
    scaling_L = torch.tensor([0.5, 2.0, 3.0])
    post_relu_BF = library_crosscoder_encode(state, scaling_L[:, None] * x_BLD)
    threshold = float((post_relu_BF * norms_F).quantile(0.7))
    state |= {"k": torch.tensor(4, dtype=torch.int), "threshold": torch.tensor(threshold),
              "code_normalization_id": torch.tensor(DL_CODE_NORMALISATIONS[code_normalisation])}
    directory = save_dictionary_learning(tmp_path / "btk", state, "BatchTopKCrossCoder", k=4)
    save_file({"scaling_factors": scaling_L}, tmp_path / "norm.safetensors")
    crosscoder = load_crosscoder(directory, normalisation=tmp_path / "norm.safetensors")
    assert crosscoder.activation == BatchTopK(k=4) and checkpoint_info(directory).activation == "batchtopk"
    expected_BF = post_relu_BF * (post_relu_BF * norms_F > threshold)
    f_BF = crosscoder.encode(x_BLD)
    torch.testing.assert_close(f_BF, expected_BF)
    assert 0 < int((f_BF > 0).sum()) < int((post_relu_BF > 0).sum())
    torch.testing.assert_close(crosscoder.decode(f_BF), library_crosscoder_decode(state, f_BF) / scaling_L[:, None])


def test_dictionary_learning_errors_name_the_file_and_fix(tmp_path):
    state = crosscoder_state(4)
    unset = save_dictionary_learning(tmp_path / "unset", state | {"k": torch.tensor(4), "threshold": torch.tensor(-1.0)}, "BatchTopKCrossCoder")
    decoupled = save_dictionary_learning(
        tmp_path / "decoupled",
        state | {"k": torch.tensor(4), "threshold": torch.tensor(0.5), "code_normalization_id": torch.tensor(5)},
        "BatchTopKCrossCoder",
    )
    bad_shape = save_dictionary_learning(tmp_path / "shape", state | {"decoder.bias": torch.zeros(L, D + 1)}, "CrossCoder")
    gated = save_dictionary_learning(tmp_path / "gated", state, "GatedAutoEncoder")
    no_cfg = save_dictionary_learning(tmp_path / "nocfg", state, "CrossCoder")
    (no_cfg / "config.json").unlink()
    cases = [
        (unset, r"unset/ae.pt: 'threshold' is -1.0, never set in training.*use a checkpoint saved after"),
        (decoupled, r"use code normalisation id 5; only CROSSCODER, SAE, NONE"),
        (bad_shape, r"shape/ae.pt: 'decoder.bias' has shape \(3, 6\); expected \(3, 5\)"),
        (gated, r"gated/config.json has dict_class 'GatedAutoEncoder'; only CrossCoder and BatchTopKCrossCoder"),
        (no_cfg, r"nocfg' needs both ae.pt and config.json"),
    ]
    for directory, message in cases:
        with pytest.raises(ConfigError, match=message) as error:
            load_crosscoder(directory)
        assert "\n" not in str(error.value)


# --- SAELens ----------------------------------------------------------------------------------------

SAELENS_HOOK = "blocks.1.hook_resid_post"


def saelens_encode(tensors: dict[str, torch.Tensor], architecture: str, x_BD: torch.Tensor, k: int) -> torch.Tensor:
    """SAELens: h = (x - b_dec) W_enc + b_enc; standard relu(h), jumprelu relu(h) * [h > threshold],
    topk relu of the k largest of h scattered back."""
    h_BF = (x_BD - tensors["b_dec"]) @ tensors["W_enc"] + tensors["b_enc"]
    if architecture == "standard":
        return torch.relu(h_BF)
    if architecture == "jumprelu":
        return torch.relu(h_BF) * (h_BF > tensors["threshold"])
    top = h_BF.topk(k, dim=-1)
    return torch.zeros_like(h_BF).scatter(-1, top.indices, torch.relu(top.values))


@pytest.mark.parametrize("architecture", ["standard", "jumprelu", "topk"])
def test_saelens_sae_is_a_one_hookpoint_crosscoder(tmp_path, architecture):
    tensors = random_tensors(5, W_enc=(D, F), b_enc=(F,), W_dec=(F, D), b_dec=(D,))
    cfg: dict[str, object] = {}
    if architecture == "jumprelu":
        # Positive thresholds, one 0 and one negative (SAELens's relu makes both a plain ReLU).
        tensors["threshold"] = torch.cat([torch.tensor([0.0, -0.3]), 0.2 + torch.rand(F - 2, generator=torch.Generator().manual_seed(6))])
    if architecture == "topk":
        cfg = {"activation_fn_kwargs": {"k": 3}}
    directory = save_saelens(tmp_path / architecture, tensors, architecture, **cfg)
    info = checkpoint_info(directory)
    expected_activation = {"standard": "relu", "jumprelu": "jumprelu", "topk": "topk"}[architecture]
    assert (info.format, info.hookpoints, info.d_model, info.n_features, info.activation) == ("saelens", [SAELENS_HOOK], D, F, expected_activation)
    sae = load_crosscoder(directory, dtype="float64")
    assert sae.W_enc_PDF.dtype == torch.float64 and not sae.W_enc_PDF.requires_grad
    x_BD = 2 * random_tensors(7, x=(B, D))["x"]
    f_BF = sae.encode(x_BD[:, None].double())
    expected_BF = saelens_encode(tensors, architecture, x_BD, k=3)
    torch.testing.assert_close(f_BF.float(), expected_BF, atol=1e-5, rtol=1e-5)
    assert 0 < int((f_BF > 0).sum()) < f_BF.numel()
    torch.testing.assert_close(sae.decode(f_BF)[:, 0].float(), expected_BF @ tensors["W_dec"] + tensors["b_dec"], atol=1e-5, rtol=1e-5)


def test_old_saelens_config_without_architecture_is_standard_and_b_dec_may_stay_out(tmp_path):
    tensors = random_tensors(8, W_enc=(D, F), b_enc=(F,), W_dec=(F, D), b_dec=(D,))
    directory = save_saelens(tmp_path / "old", tensors, None, apply_b_dec_to_input=False)
    x_BD = random_tensors(9, x=(B, D))["x"]
    sae = load_crosscoder(directory)
    torch.testing.assert_close(sae.encode(x_BD[:, None]), torch.relu(x_BD @ tensors["W_enc"] + tensors["b_enc"]))


def test_saelens_errors_name_the_file_and_fix(tmp_path):
    tensors = random_tensors(10, W_enc=(D, F), b_enc=(F,), W_dec=(F, D), b_dec=(D,))
    cases = [
        (save_saelens(tmp_path / "gated", tensors, "gated"), r"gated/cfg.json has architecture 'gated'; only standard, jumprelu and topk"),
        (save_saelens(tmp_path / "norm", tensors, "standard", normalize_activations="expected_average_only_in"),
         r"norm/cfg.json has normalize_activations="),
        (save_saelens(tmp_path / "nothreshold", tensors, "jumprelu"),
         r"nothreshold/sae_weights.safetensors do not match .* missing keys \['threshold'\]"),
        (save_saelens(tmp_path / "nok", tensors, "topk"), r"nok/cfg.json has k=None; expected a positive integer"),
        (save_saelens(tmp_path / "hook", tensors, "standard", hook_name=None), r"hook/cfg.json has hook_name=None"),
        (save_saelens(tmp_path / "wide", tensors | {"W_dec": torch.zeros(F, D + 2)}, "standard"),
         r"wide/sae_weights.safetensors: 'W_dec' has shape \(12, 7\); expected \(12, 5\)"),
    ]
    for directory, message in cases:
        with pytest.raises(ConfigError, match=message) as error:
            load_crosscoder(directory)
        assert "\n" not in str(error.value)


def test_only_jumprelu_crosscoders_are_saved_in_the_crosscode_format(tmp_path):
    from crosscoder_interventions.dictionary.checkpoints import save_crosscode_checkpoint

    with pytest.raises(ValueError, match="holds JumpReLU crosscoders, not topk ones"):
        save_crosscode_checkpoint(Crosscoder(["a"], D, F, activation=TopK(3)), tmp_path / "topk", scaling_factors_P=None, folded=True)
    assert not (tmp_path / "topk").exists()


# --- crosscode: ReLU, TopK, BatchTopK -----------------------------------------------------------------


def save_crosscode(directory, tensors: dict[str, torch.Tensor], classname: str, activation_cfg: dict, **cfg: object):
    """As the crosscode library's `SaveableModule.save` of an unfolded `ModelHookpointAcausalCrosscoder`
    (latest version: no hookpoints in the yaml): its state dict, zero scaling buffers, and `yaml.dump`
    of `_dump_cfg`. Activations without parameters add no keys."""
    import yaml

    directory.mkdir(parents=True, exist_ok=True)
    state = {"_W_enc_XiDiL": tensors["W_enc"][None], "_W_dec_LXoDo": tensors["W_dec"][:, None], "b_enc_L": tensors["b_enc"],
             "_b_dec_XoDo": tensors["b_dec"][None], "folded_scaling_factors_in_Xi": torch.zeros(1, L),
             "folded_scaling_factors_out_Xo": torch.zeros(1, L), "is_folded": torch.tensor(False)}
    torch.save(state, directory / "model.pt")
    config = {"n_models": 1, "n_hookpoints": L, "d_model": D, "n_latents": F, "activation_fn": {"classname": classname, "cfg": activation_cfg},
              "use_encoder_bias": True, "use_decoder_bias": True, "dtype": "float32", **cfg}
    (directory / "model_cfg.yaml").write_text(yaml.dump(config))
    return directory


def crosscode_tensors(seed: int) -> dict[str, torch.Tensor]:
    return random_tensors(seed, W_enc=(L, D, F), b_enc=(F,), W_dec=(F, L, D), b_dec=(L, D))


def crosscode_encode(tensors: dict[str, torch.Tensor], classname: str, x_BLD: torch.Tensor, k: int) -> torch.Tensor:
    """The crosscode library: h = einsum(x, W_enc) + b_enc; ReLUActivation relu(h); TopkActivation
    `topk_activation`: the k largest values of h scattered back, with no ReLU."""
    h_BF = torch.einsum("bld,ldf->bf", x_BLD, tensors["W_enc"]) + tensors["b_enc"]
    if classname == "ReLUActivation":
        return torch.relu(h_BF)
    top = h_BF.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(h_BF).scatter(-1, top.indices, top.values)


@pytest.mark.parametrize("classname", ["ReLUActivation", "TopkActivation"])
def test_crosscode_relu_and_topk_crosscoders_with_their_scaling_folded_in(tmp_path, classname):
    """Trained on s * x (the scaling given by a normalisation file, the library's buffers being zero):
    the loaded crosscoder on raw x gives the library's latents on s * x and its reconstruction / s.
    TopK keeps negative pre-activations when fewer than k are positive, as the library does."""
    k = 9
    tensors = crosscode_tensors(11)
    activation_cfg = {"k": k} if classname == "TopkActivation" else {}
    directory = save_crosscode(tmp_path / classname, tensors, classname, activation_cfg)
    info = checkpoint_info(directory)
    expected_activation = {"ReLUActivation": ReLU(), "TopkActivation": SignedTopK(k)}[classname]
    assert (info.format, info.hookpoints, info.activation) == ("crosscode", hookpoint_names(L - 1), expected_activation.name)
    scaling_L = torch.tensor([0.5, 2.0, 3.0])
    save_file({"scaling_factors": scaling_L}, tmp_path / "norm.safetensors")
    crosscoder = load_crosscoder(directory, normalisation=tmp_path / "norm.safetensors")
    assert crosscoder.activation == expected_activation
    x_BLD = random_tensors(12, x=(B, L, D))["x"]
    expected_BF = crosscode_encode(tensors, classname, scaling_L[:, None] * x_BLD, k)
    f_BF = crosscoder.encode(x_BLD)
    torch.testing.assert_close(f_BF, expected_BF, atol=1e-5, rtol=1e-5)
    if classname == "TopkActivation":
        assert ((f_BF != 0).sum(-1) == k).all() and (f_BF < 0).any() and (f_BF > 0).any()
    else:
        assert 0 < int((f_BF > 0).sum()) < f_BF.numel()
    recon_BLD = torch.einsum("bf,fld->bld", expected_BF, tensors["W_dec"]) + tensors["b_dec"]
    torch.testing.assert_close(crosscoder.decode(f_BF), recon_BLD / scaling_L[:, None], atol=1e-5, rtol=1e-5)


def test_signed_topk_keeps_the_k_largest_whatever_their_sign():
    pre_BF = torch.tensor([[3.0, -1.0, 0.5, 2.0, 0.2], [-2.0, -1.0, -0.5, 0.1, -3.0]])
    f_BF = SignedTopK(2)(pre_BF, torch.zeros(5))
    torch.testing.assert_close(f_BF, torch.tensor([[3.0, 0.0, 0.0, 2.0, 0.0], [0.0, 0.0, -0.5, 0.1, 0.0]]), atol=0, rtol=0)
    assert not SignedTopK(2).per_feature


def test_crosscode_activations_that_are_not_read_say_why(tmp_path):
    tensors = crosscode_tensors(13)
    cases = [
        (save_crosscode(tmp_path / "btk", tensors, "BatchTopkActivation", {"k_per_example": 4}),
         r"btk/model_cfg.yaml has activation_fn BatchTopkActivation, .* saves no inference threshold.*no per-position meaning; use a TopK"),
        (save_crosscode(tmp_path / "gm", tensors, "GroupMaxActivation", {"k_groups": 4, "latents_size": F}),
         r"gm/model_cfg.yaml has activation_fn 'GroupMaxActivation'; only AnthropicSTEJumpReLUActivation, .*TopkActivation crosscoders are read"),
        (save_crosscode(tmp_path / "nok", tensors, "TopkActivation", {}), r"nok/model_cfg.yaml has k=None; expected a positive integer"),
    ]
    for directory, message in cases:
        for read in (checkpoint_info, load_crosscoder):
            with pytest.raises(ConfigError, match=message) as error:
                read(directory)
            assert "\n" not in str(error.value)
