"""Top-activating dataset examples of crosscoder features, and their rendering for a reader.

One pass over the dataset finds, per feature, the examples with the highest maximum activation;
the chosen examples are then rerun to record a window of per-token activations around the maximum.

Shape suffixes: B batch, S sequence position, E examples, K selected features, F features.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge
from transformers import PreTrainedTokenizerBase

from crosscoder_interventions.activations import tokenize_texts
from crosscoder_interventions.analysis.discovery import feature_activations_BSF
from crosscoder_interventions.analysis.markup import markdown_text
from crosscoder_interventions.dictionary.model import Crosscoder


@torch.no_grad()
def _selected_activations_BSK(
    bridge: TransformerBridge, crosscoder: Crosscoder, tokens_BS: torch.Tensor, mask_BS: torch.Tensor, features: list[int]
) -> torch.Tensor:
    f_BSF = feature_activations_BSF(bridge, crosscoder, tokens_BS.to(crosscoder.W_dec_FPD.device), crosscoder.hookpoints)
    return f_BSF[..., features].float().cpu() * mask_BS[..., None]


def top_activating_contexts(
    bridge: TransformerBridge,
    crosscoder: Crosscoder,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    features: list[int],
    *,
    k: int,
    window: int,
    batch_size: int,
    max_length: int,
    prepend_bos: bool,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(contexts, activations): the top-k examples per feature with a window of per-token
    activations around each maximum, and every non-zero activation of each feature (for histograms)."""
    max_EK = torch.zeros(len(texts), len(features))
    nonzero: list[list[torch.Tensor]] = [[] for _ in features]
    for start in tqdm(range(0, len(texts), batch_size), desc="feature examples", unit="batch"):
        tokens_BS, mask_BS = tokenize_texts(tokenizer, texts[start : start + batch_size], max_seq_len=max_length, prepend_bos=prepend_bos)
        f_BSK = _selected_activations_BSK(bridge, crosscoder, tokens_BS, mask_BS, features)
        max_EK[start : start + len(tokens_BS)] = f_BSK.max(dim=1).values
        for column in range(len(features)):
            values = f_BSK[..., column]
            nonzero[column].append(values[values > 0])
    rows = []
    for column, feature in enumerate(features):
        top_values, top_examples = max_EK[:, column].topk(min(k, len(texts)))
        chosen = [int(example) for example, value in zip(top_examples, top_values) if value > 0]
        if not chosen:
            continue
        tokens_BS, mask_BS = tokenize_texts(tokenizer, [texts[e] for e in chosen], max_seq_len=max_length, prepend_bos=prepend_bos)
        f_BS = _selected_activations_BSK(bridge, crosscoder, tokens_BS, mask_BS, [feature])[..., 0]
        for rank, (example, tokens_S, acts_S, real_S) in enumerate(zip(chosen, tokens_BS, f_BS, mask_BS)):
            length = int(real_S.sum())
            peak = int(acts_S[:length].argmax())
            lo, hi = max(0, peak - window), min(length, peak + window + 1)
            rows.append(
                {
                    "feature": feature,
                    "rank": rank,
                    "example": example,
                    "max_activation": float(acts_S[peak]),
                    "max_position": peak,
                    "peak_in_window": peak - lo,
                    "tokens": [tokenizer.decode([token]) for token in tokens_S[lo:hi].tolist()],
                    "activations": acts_S[lo:hi].tolist(),
                }
            )
    contexts = pd.DataFrame(rows, columns=["feature", "rank", "example", "max_activation", "max_position", "peak_in_window", "tokens", "activations"])
    activations = pd.concat(
        [pd.DataFrame({"feature": feature, "activation": torch.cat(values).numpy()}) for feature, values in zip(features, nonzero)],
        ignore_index=True,
    )
    return contexts, activations


def _shade(activation: float, scale: float) -> str:
    alpha = 0.0 if scale <= 0 else min(1.0, activation / scale)
    return f"rgba(220, 60, 20, {alpha:.2f})"


def contexts_html(feature: int, contexts: pd.DataFrame, reason: str = "") -> str:
    """A standalone page: each context a line of tokens shaded by activation, the maximum outlined."""
    scale = float(contexts["max_activation"].max()) if len(contexts) else 1.0
    paragraphs = []
    for context in contexts.itertuples():
        spans = []
        for position, (token, activation) in enumerate(zip(context.tokens, context.activations)):
            outline = " class=\"peak\"" if position == context.peak_in_window else ""
            title = f"{activation:.3f}"
            text = html.escape(token).replace("\n", "&#8629;")
            spans.append(f'<span{outline} style="background:{_shade(activation, scale)}" title="{title}">{text}</span>')
        paragraphs.append(
            f'<p><span class="meta">#{context.rank + 1} example {context.example}, max {context.max_activation:.3f}</span><br>{"".join(spans)}</p>'
        )
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Feature {feature}</title>
<style>
body {{ font-family: sans-serif; max-width: 60em; margin: 2em auto; line-height: 1.9; }}
p span {{ white-space: pre-wrap; font-family: monospace; font-size: 15px; }}
span.peak {{ outline: 2px solid black; }}
span.meta {{ font-family: sans-serif; font-size: 12px; color: #555; }}
</style></head>
<body><h1>Feature {feature}: top-activating contexts</h1>
<p>{html.escape(reason)}</p>
<p>Tokens are shaded by the feature's activation (darkest = {scale:.3f}); the maximum is outlined; hover for values.</p>
{chr(10).join(paragraphs)}
</body></html>
"""


def contexts_markdown(feature: int, contexts: pd.DataFrame, reason: str = "") -> str:
    """One context per paragraph, the maximum token marked as [[token]] with its activation. Tokens are
    escaped (markup.markdown_text): a context shows the dataset's characters, never renders them. The
    marks stay literal: no `(` or line start can follow them to make a link."""
    lines = [f"# Feature {feature}: top-activating contexts", ""]
    if reason:
        lines += [markdown_text(reason), ""]
    for context in contexts.itertuples():
        tokens = [markdown_text(token) for token in context.tokens]
        tokens[context.peak_in_window] = f"[[{tokens[context.peak_in_window]}]]"
        lines += [f"**#{context.rank + 1}** (example {context.example}, max {context.max_activation:.3f}): {''.join(tokens)}", ""]
    return "\n".join(lines)
