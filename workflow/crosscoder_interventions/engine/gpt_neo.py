"""GPT-Neo's attention over the engine's slots: Hugging Face's GPTNeoSelfAttention, whose `_attn`
applies its own causal and sliding-window masks by counting cache slots, is given the same
computation under the engine's masks (see `attention`) for the duration of a call. The bridge
delegates GPT-Neo's attention to that class, so no bridge seam sees it.

Shape letters as in `attention`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import torch
from torch import nn
from transformer_lens.model_bridge import TransformerBridge
from transformers.models.gpt_neo.modeling_gpt_neo import GPTNeoSelfAttention

from crosscoder_interventions.engine.attention import SlotAttention, replaced
from crosscoder_interventions.runtime import hf_model_of


def is_gpt_neo(bridge: TransformerBridge) -> bool:
    return any(isinstance(module, GPTNeoSelfAttention) for module in hf_model_of(bridge).modules())


class GPTNeoSlotAttention(SlotAttention):
    """GPTNeoSelfAttention._attn of every layer over the slots' keys and values and the call's (which
    the model computes without a cache), under the engine's masks (no scaling, as GPT-Neo)."""

    def __init__(self, bridge: TransformerBridge) -> None:
        hf_model = hf_model_of(bridge)
        self.modules = [m for m in hf_model.modules() if isinstance(m, GPTNeoSelfAttention)]
        window = hf_model.config.window_size
        super().__init__([window if module.attention_type == "local" else None for module in self.modules])

    def missing(self) -> str:
        # An attention class whose forward never calls `_attn` (sdpa, flash attention) ran under
        # GPT-Neo's own slot-counting masks.
        return (
            "the model's attention never called GPTNeoSelfAttention._attn (attn_implementation "
            f"'{self.modules[0].config._attn_implementation}'), so the engine's masks were not applied; "
            "load the model with attn_implementation='eager' (models.load_model does)."
        )

    def attention_of(self, layer: int, module: GPTNeoSelfAttention) -> Callable:
        def attn(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: object = None):
            key, value = self.with_slots(layer, key, value)
            weights = torch.matmul(query.to(torch.float32), key.to(torch.float32).transpose(-1, -2))
            weights = weights.masked_fill(~self.mask(layer), torch.finfo(weights.dtype).min)
            weights = nn.functional.softmax(weights, dim=-1).to(value.dtype)
            weights = module.attn_dropout(weights)
            return torch.matmul(weights, value), weights

        return attn

    @contextmanager
    def installed(self) -> Iterator[None]:
        with ExitStack() as stack:
            for layer, module in enumerate(self.modules):
                stack.enter_context(replaced(module, {"_attn": self.attention_of(layer, module)}))
            yield
