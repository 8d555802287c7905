"""Which attention adapter a model gets: the GPT-Neo one, or the bridge's seams (see `attention`)."""

from __future__ import annotations

import inspect

from transformer_lens.model_bridge import TransformerBridge

from crosscoder_interventions.engine.attention import BridgeSlotAttention, SlotAttention
from crosscoder_interventions.engine.gpt_neo import GPTNeoSlotAttention, is_gpt_neo
from crosscoder_interventions.errors import ConfigError


def slot_attention(bridge: TransformerBridge) -> SlotAttention:
    """The adapter for `bridge`'s attention; a one-line ConfigError naming what a model lacks."""
    name = type(bridge.original_model).__name__
    if "position_ids" not in inspect.signature(bridge.original_model.forward).parameters:
        # Pads and out-of-order queries need their positions given per call.
        raise ConfigError(
            f"fast intervened generation needs position_ids in {name}.forward, which it lacks; "
            "use crosscoder_interventions.engine.oracle for this architecture."
        )
    return GPTNeoSlotAttention(bridge) if is_gpt_neo(bridge) else BridgeSlotAttention(bridge)
