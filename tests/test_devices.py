"""Loaders put every weight on the requested device in the requested dtype; the engine refuses an
attention implementation that would bypass its masks."""

import pytest
import torch
from tiny_world import device_dtype_params, load_tiny, random_crosscoder, require_device, save_tiny_model
from torch import nn
from transformers.models.gpt_neo.modeling_gpt_neo import GPTNeoSelfAttention

from crosscoder_interventions.dictionary.checkpoints import load_crosscoder, save_crosscode_checkpoint
from crosscoder_interventions.engine.generation import generate
from crosscoder_interventions.engine.interventions import ManyLayerAblation, Plain
from crosscoder_interventions.errors import ConfigError


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny"))


def assert_all_on(module: nn.Module, device: str, dtype: torch.dtype) -> None:
    tensors = dict(module.named_parameters()) | dict(module.named_buffers())
    assert tensors
    for name, tensor in tensors.items():
        assert tensor.device.type == torch.device(device).type, f"{name} is on {tensor.device}"
        # Integer and boolean buffers (GPT-Neo's causal masks) keep their dtype.
        if tensor.is_floating_point():
            assert tensor.dtype == dtype, f"{name} is {tensor.dtype}"


@pytest.mark.parametrize("device_dtype", device_dtype_params())
def test_load_model_puts_every_weight_on_the_device_in_the_dtype(model_dir, device_dtype):
    device, dtype = device_dtype
    require_device(device)
    bridge = load_tiny(model_dir, device=device, dtype=dtype)
    assert_all_on(bridge, device, getattr(torch, dtype))
    assert_all_on(bridge.original_model, device, getattr(torch, dtype))
    # Eager attention, the class whose `_attn` the engine replaces.
    attention = [m for m in bridge.original_model.modules() if isinstance(m, GPTNeoSelfAttention)]
    assert attention and all(type(m) is GPTNeoSelfAttention for m in attention)
    assert bridge.original_model.config._attn_implementation == "eager"


@pytest.mark.parametrize("device_dtype", device_dtype_params())
def test_load_crosscoder_puts_every_weight_on_the_device_in_the_dtype(tmp_path, device_dtype):
    device, dtype = device_dtype
    require_device(device)
    saved = random_crosscoder(n_layers=4, d_model=32)
    path = save_crosscode_checkpoint(saved, tmp_path / "crosscoder", scaling_factors_P=None, folded=True)
    crosscoder = load_crosscoder(path, device=device, dtype=dtype)
    assert_all_on(crosscoder, device, getattr(torch, dtype))
    torch.testing.assert_close(crosscoder.W_dec_FPD.float().cpu(), saved.W_dec_FPD.to(getattr(torch, dtype)).float())


class AttentionWithoutAttn(GPTNeoSelfAttention):
    """As a flash or sdpa attention class: attends (causally, over the call's tokens) without `_attn`."""

    def forward(self, hidden_states, attention_mask=None, layer_past=None, use_cache=False, output_attentions=False, **kwargs):
        query, key, value = (
            self._split_heads(proj(hidden_states), self.num_heads, self.head_dim) for proj in (self.q_proj, self.k_proj, self.v_proj)
        )
        output = nn.functional.scaled_dot_product_attention(query, key, value, is_causal=True, scale=1.0)
        return self.out_proj(self._merge_heads(output, self.num_heads, self.head_dim)), None


def test_engine_refuses_an_attention_that_never_calls_attn(model_dir):
    bridge = load_tiny(model_dir)
    crosscoder = random_crosscoder(n_layers=4, d_model=32)
    prompts = [[5, 9, 14, 3], [7, 2]]
    settings = [Plain(), ManyLayerAblation(0, 1.0)]
    expected = generate(bridge, crosscoder, prompts, settings, max_new_tokens=3, progress=False).generated
    for module in bridge.original_model.modules():
        if type(module) is GPTNeoSelfAttention:
            module.__class__ = AttentionWithoutAttn
    with pytest.raises(ConfigError, match=r"never called GPTNeoSelfAttention\._attn.*attn_implementation='eager'") as info:
        generate(bridge, crosscoder, prompts, settings, max_new_tokens=3, progress=False)
    assert "\n" not in str(info.value)
    for module in bridge.original_model.modules():
        if type(module) is AttentionWithoutAttn:
            module.__class__ = GPTNeoSelfAttention
    assert generate(bridge, crosscoder, prompts, settings, max_new_tokens=3, progress=False).generated == expected
