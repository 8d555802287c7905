"""Attention over the engine's key/value slots, under masks built from position ids and slot liveness.

The fast engine (`generation`) keeps its own key/value cache and lays rows out with pads and
out-of-order run queries, so every layer must attend over the slots' keys and values and the call's
own, under masks given per call, never under masks that count cache slots. An adapter does that for
one family of attention modules, for the duration of a call (`installed`), and checks after every
call that each layer really went through it (`collected`): an attention that bypassed it ran under
the model's own masks, so its results are wrong and none may be used.

Under TransformerBridge the attention of GPT-2, GPT-NeoX, Llama, Gemma 2, Qwen 2 and their kin is the
bridge's own reconstruction (hooks on scores and pattern), not Hugging Face's: Hugging Face's
attention interface (`ALL_ATTENTION_FUNCTIONS`) is never called. Every such reconstruction extends
keys and values after their positional embedding through `_update_kv_cache` and applies a 4D mask,
as authoritative, through `_apply_reconstruct_attention_mask`; `BridgeSlotAttention` adapts these two
seams, so grouped-query attention, scaling and softcapping stay the bridge's (the oracle's) own.
Where the bridge delegates a layer's attention to the Hugging Face module (its plain
`AttentionBridge`, e.g. OPT), that module calls the attention interface: the engine's registered
implementation (`engine_attention_forward`, Hugging Face's eager computation under the engine's
masks) is selected for the duration of a call by switching the model's `config._attn_implementation`.
GPT-Neo's attention is Hugging Face's, which applies its own slot-counting masks: see `gpt_neo`.

Shape letters: R rows, Q queries of the call, K keys (the slots' and then the queries'), H heads
(key/value heads under grouped-query attention), E head dimension.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Protocol, cast

import torch
from torch import nn
from transformer_lens.model_bridge import TransformerBridge
from transformer_lens.model_bridge.generalized_components import ALiBiJointQKVAttentionBridge, AttentionBridge, MPTALiBiAttentionBridge
from transformers import AttentionInterface, PreTrainedConfig
from transformers.models.llama.modeling_llama import repeat_kv

from crosscoder_interventions.errors import ConfigError
from crosscoder_interventions.runtime import hf_model_of


class Slots(Protocol):
    """What an adapter reads of the engine's cache: per layer, the slots' keys and values (R, H, K, E)
    (no entries before the first call)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]


class SlotAttention(ABC):
    """Per call: masks (R, 1, Q, K) for each layer's window, the slots to prepend, and each layer's
    keys and values as attended (the slots' followed by the queries'), for the caller to keep or crop.

    windows[layer]: that layer's sliding window (a query at position q sees keys at positions
    > q - window), None for global attention.
    """

    def __init__(self, windows: list[int | None]) -> None:
        self.windows = windows
        self.masks: dict[int | None, torch.Tensor] = {}
        self.model_mask_R1QK: torch.Tensor | None = None
        self.knockouts: dict[int, torch.Tensor] = {}
        self.past: Slots | None = None
        self.keys: list[torch.Tensor | None] = []
        self.values: list[torch.Tensor | None] = []

    def begin(self, past: Slots, query_pos_RQ: torch.Tensor, key_pos_RK: torch.Tensor, key_alive_RK: torch.Tensor) -> None:
        """Before a call over the slots of `past`: query q sees itself (the last Q keys are the queries'
        own slots) and alive keys of earlier positions."""
        self.past = past
        self.knockouts = {}
        self.keys, self.values = [None] * len(self.windows), [None] * len(self.windows)
        n_queries, n_keys = query_pos_RQ.shape[1], key_pos_RK.shape[1]
        earlier_RQK = key_alive_RK[:, None, :] & (key_pos_RK[:, None, :] < query_pos_RQ[:, :, None])
        own_QK = torch.zeros(n_queries, n_keys, dtype=torch.bool, device=query_pos_RQ.device)
        own_QK[:, n_keys - n_queries :] = torch.eye(n_queries, dtype=torch.bool, device=query_pos_RQ.device)
        visible_RQK = earlier_RQK | own_QK
        distance_RQK = query_pos_RQ[:, :, None] - key_pos_RK[:, None, :]
        # What the model itself is handed: a 4D mask is taken as prepared, so the model builds none
        # of its own (whose code asks the device about the position ids); every layer applies ours.
        self.model_mask_R1QK = visible_RQK[:, None]
        self.masks = {
            window: (visible_RQK if window is None else visible_RQK & (distance_RQK < window))[:, None]
            for window in set(self.windows)
        }

    def knock_out(self, blocked_RQK_by_layer: Mapping[int, torch.Tensor]) -> None:
        """For this call, after `begin`: layer l may not read the (query, key) pairs where
        blocked_RQK_by_layer[l] is true (an attention knockout), on top of the masks of `begin`."""
        self.knockouts = dict(blocked_RQK_by_layer)

    def mask(self, layer: int) -> torch.Tensor:
        visible_R1QK = self.masks[self.windows[layer]]
        blocked_RQK = self.knockouts.get(layer)
        return visible_R1QK if blocked_RQK is None else visible_R1QK & ~blocked_RQK[:, None].to(visible_R1QK.device)

    def with_slots(self, layer: int, key_RHQE: torch.Tensor, value_RHQE: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The slots' keys and values followed by the call's, recorded as this layer's."""
        assert self.past is not None, "begin() comes before any layer runs"
        if self.past.keys:
            key_RHQE = torch.cat([self.past.keys[layer], key_RHQE], dim=2)
            value_RHQE = torch.cat([self.past.values[layer], value_RHQE], dim=2)
        self.keys[layer], self.values[layer] = key_RHQE, value_RHQE
        return key_RHQE, value_RHQE

    @abstractmethod
    def missing(self) -> str:
        """The one-line reason why some layer never went through the adapter."""

    def collected(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """After a call: every layer's keys and values (R, H, K, E), the slots' and the queries'."""
        if any(keys is None for keys in self.keys):
            raise ConfigError(self.missing())
        # Every layer's keys and values were set, checked above.
        return cast(list[torch.Tensor], self.keys), cast(list[torch.Tensor], self.values)

    @abstractmethod
    def installed(self) -> AbstractContextManager[None]:
        """The adapter in place for the duration, the model's own attention restored after."""


@contextmanager
def replaced(module: nn.Module, attributes: Mapping[str, object]) -> Iterator[None]:
    """`module` given instance attributes (methods: shadowing the class's) for the duration, removed after."""
    for name, value in attributes.items():
        if name in vars(module):
            raise ConfigError(f"{type(module).__name__}.{name} is already replaced on this model (another engine call in progress?)")
        setattr(module, name, value)
    try:
        yield
    finally:
        for name in attributes:
            delattr(module, name)


ENGINE_ATTENTION = "crosscoder_engine"
# Set on a Hugging Face attention module for the duration of an engine call: (adapter, layer).
ENGINE_LAYER = "_crosscoder_engine_layer"


def engine_attention_forward(
    module: nn.Module,
    query_RHQE: torch.Tensor,
    key_RHQE: torch.Tensor,
    value_RHQE: torch.Tensor,
    attention_mask: object,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    **kwargs: object,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hugging Face's eager attention (grouped-query heads repeated, scaling, softcapping, float32
    softmax) over the engine's slots, under its mask of the module's layer instead of `attention_mask`."""
    if not hasattr(module, ENGINE_LAYER):
        raise ConfigError(f"attn_implementation '{ENGINE_ATTENTION}' is the intervention engine's and works only inside its calls.")
    adapter, layer = getattr(module, ENGINE_LAYER)
    key_RHKE, value_RHKE = adapter.with_slots(layer, key_RHQE, value_RHQE)
    adapter.masked[layer] = True
    groups = getattr(module, "num_key_value_groups", 1)
    key_RHKE, value_RHKE = repeat_kv(key_RHKE, groups), repeat_kv(value_RHKE, groups)
    # Hugging Face's attention modules hold head_dim as a plain int, which nn.Module types Tensor | Module.
    scale = scaling if scaling is not None else cast(int, module.head_dim) ** -0.5
    scores_RHQK = torch.matmul(query_RHQE, key_RHKE.transpose(2, 3)) * scale
    if softcap is not None:
        scores_RHQK = torch.tanh(scores_RHQK / softcap) * softcap
    scores_RHQK = scores_RHQK.masked_fill(~adapter.mask(layer), torch.finfo(scores_RHQK.dtype).min)
    weights_RHQK = nn.functional.softmax(scores_RHQK, dim=-1, dtype=torch.float32).to(query_RHQE.dtype)
    weights_RHQK = nn.functional.dropout(weights_RHQK, p=dropout, training=module.training)
    return torch.matmul(weights_RHQK, value_RHKE).transpose(1, 2).contiguous(), weights_RHQK


AttentionInterface.register(ENGINE_ATTENTION, engine_attention_forward)


def sliding_window(hf_attention: nn.Module, config: object) -> int | None:
    """A layer's sliding window: its attention's own (Gemma 2, Qwen 2: None on global layers), else the
    model's (Mistral: every layer), else none."""
    if hasattr(hf_attention, "sliding_window"):
        return cast("int | None", hf_attention.sliding_window)  # a plain attribute: nn.Module types it Tensor | Module
    return getattr(config, "sliding_window", None)


# Attention whose position information is a bias the model computes from its 2D attention mask.
ALIBI_ATTENTION = (ALiBiJointQKVAttentionBridge, MPTALiBiAttentionBridge)


class BridgeSlotAttention(SlotAttention):
    """Every block's attention: the bridge's reconstruction with its key/value and mask seams
    adapted, or, where the bridge delegates to Hugging Face, the engine's attention implementation."""

    SEAMS = ("_update_kv_cache", "_apply_reconstruct_attention_mask")

    def __init__(self, bridge: TransformerBridge) -> None:
        hf_model = hf_model_of(bridge)
        name = type(hf_model).__name__
        blocks = getattr(bridge, "blocks", None)
        if not blocks or not all(hasattr(block, "attn") and all(hasattr(block.attn, seam) for seam in self.SEAMS) for block in blocks):
            raise ConfigError(
                f"fast intervened generation needs TransformerBridge blocks with an attention component (blocks.<i>.attn), "
                f"which {name} lacks; use crosscoder_interventions.engine.oracle for it."
            )
        self.modules = [block.attn for block in blocks]
        alibi = next((module for module in self.modules if isinstance(module, ALIBI_ATTENTION)), None)
        if alibi is not None:
            raise ConfigError(
                f"the attention of {name} ({type(alibi).__name__}) builds its ALiBi biases from a 2D attention mask, which the engine's "
                "slot layout cannot give it; use crosscoder_interventions.engine.oracle for this architecture."
            )
        self.delegated = [type(module).forward is AttentionBridge.forward for module in self.modules]
        self.model_name = name
        self.config = config = hf_model.config
        super().__init__([sliding_window(module.original_component, config) for module in self.modules])
        self.masked: list[bool] = []

    def begin(self, past: Slots, query_pos_RQ: torch.Tensor, key_pos_RK: torch.Tensor, key_alive_RK: torch.Tensor) -> None:
        super().begin(past, query_pos_RQ, key_pos_RK, key_alive_RK)
        self.masked = [False] * len(self.modules)

    def missing(self) -> str:
        layer = next(i for i, (keys, masked) in enumerate(zip(self.keys, self.masked, strict=True)) if keys is None or not masked)
        if self.delegated[layer]:
            seam = f"the attention interface (attn_implementation '{ENGINE_ATTENTION}')"
        else:
            seam = "_update_kv_cache" if self.keys[layer] is None else "_apply_reconstruct_attention_mask"
        return (
            f"the attention of block {layer} of {self.model_name} ({type(self.modules[layer]).__name__}) never called "
            f"{seam}, so the engine's slots and masks were not applied; use crosscoder_interventions.engine.oracle for this architecture."
        )

    def collected(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if not all(self.masked):
            raise ConfigError(self.missing())
        return super().collected()

    def seams_of(self, layer: int, module: AttentionBridge) -> dict[str, Callable]:
        apply_mask = type(module)._apply_reconstruct_attention_mask

        def update_kv_cache(key_RHQE: torch.Tensor, value_RHQE: torch.Tensor, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
            return self.with_slots(layer, key_RHQE, value_RHQE)

        def apply_reconstruct_attention_mask(
            attn_scores: torch.Tensor, attention_mask: object, seq_len: int, q_seq_len: int | None = None
        ) -> torch.Tensor:
            # The model's mask counts the call's tokens only; ours, 4D, is authoritative to the bridge.
            self.masked[layer] = True
            return apply_mask(module, attn_scores, self.mask(layer), seq_len, q_seq_len)

        return {"_update_kv_cache": update_kv_cache, "_apply_reconstruct_attention_mask": apply_reconstruct_attention_mask}

    @contextmanager
    def installed(self) -> Iterator[None]:
        with ExitStack() as stack:
            for layer, module in enumerate(self.modules):
                if self.delegated[layer]:
                    for hf_module in module.original_component.modules():
                        stack.enter_context(replaced(hf_module, {ENGINE_LAYER: (self, layer)}))
                else:
                    stack.enter_context(replaced(module, self.seams_of(layer, module)))
            if any(self.delegated):
                stack.enter_context(attention_implementation(self.config, ENGINE_ATTENTION))
            yield


@contextmanager
def attention_implementation(config: PreTrainedConfig, implementation: str) -> Iterator[None]:
    """The model's attention implementation switched for the duration (its modules read it per call)."""
    before = config._attn_implementation
    config._attn_implementation = implementation
    try:
        yield
    finally:
        config._attn_implementation = before
