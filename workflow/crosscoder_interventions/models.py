"""Loading language models as TransformerBridges in compatibility mode.

Both worlds load through here: a Hugging Face model directory or hub id, optionally with a LoRA
adapter merged into it through peft. Compatibility mode folds layer norms and centres weights as
HookedTransformer did, which is what the crosscoders were trained on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from crosscoder_interventions.config import resolve_device
from crosscoder_interventions.hub import check_hub_source, check_model_source
from crosscoder_interventions.runtime import DTYPES

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge


def load_hf_model(source: str, lora_adapter: str | None, dtype: torch.dtype) -> PreTrainedModel:
    """A causal LM from a directory or hub id, with a LoRA adapter merged into its weights."""
    check_model_source(source, "model")
    check_hub_source(source, "model")
    # Eager attention: for GPT-Neo the intervention engine replaces GPTNeoSelfAttention._attn, which the
    # sdpa and flash attention classes (chosen when the model is built, not later) never call. Other
    # architectures' attention is the bridge's own, or switched to the engine's per call (engine.attention).
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, attn_implementation="eager")
    if lora_adapter is not None:
        from peft import PeftModel

        check_model_source(lora_adapter, "LoRA adapter")
        check_hub_source(lora_adapter, "LoRA adapter")
        model = PeftModel.from_pretrained(model, lora_adapter).merge_and_unload()
    return model.eval()


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    """The model's tokenizer, padding with end-of-text when it has no pad token (GPT-Neo's has none),
    as HookedTransformer does: pads are masked or never scored, so their id only has to exist."""
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    source: str,
    *,
    lora_adapter: str | None = None,
    tokenizer_source: str | None = None,
    device: str = "cpu",
    dtype: str = "float32",
) -> TransformerBridge:
    """A TransformerBridge in compatibility mode over a Hugging Face model (and merged adapter), every
    weight on `device` in `dtype`."""
    from transformer_lens.model_bridge import TransformerBridge  # seconds to import: only where a bridge is built

    torch_dtype, torch_device = DTYPES[dtype], resolve_device(device)
    # boot_transformers takes a given hf_model as it is: it records `device` but moves nothing.
    hf_model = load_hf_model(source, lora_adapter, torch_dtype).to(torch_device)  # type: ignore[arg-type]  # transformers types the wrapped .to() as unbound
    tokenizer = load_tokenizer(tokenizer_source or source)
    bridge = TransformerBridge.boot_transformers(
        source, hf_model=hf_model, tokenizer=tokenizer, device=torch_device, dtype=torch_dtype
    )
    bridge.enable_compatibility_mode(disable_warnings=True)
    return bridge.eval()
