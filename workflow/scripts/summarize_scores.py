# %% [markdown]
# # Summary of every setting
# Means and standard errors over prompts per setting, reference rows included, with each setting's side
# effect on clean prompts (results/summary.csv), and the best setting of each method and feature
# (results/best_settings.csv).

# %%
import pandas as pd

from crosscoder_interventions.analysis.scoring import best_settings, summarize, write_csv
from crosscoder_interventions.runtime import start_job, work_begins

log = start_job(snakemake.log[0], threads=1, seed=snakemake.params.seed)
scores = pd.concat([pd.read_parquet(path) for path in snakemake.input.scores], ignore_index=True)
clean_scores = pd.concat([pd.read_parquet(path) for path in snakemake.input.clean_scores], ignore_index=True)
work_begins()

# %%
summary = summarize(scores, clean_scores)
best = best_settings(summary)
log.info("%d settings summarised; best settings:\n%s", len(summary), best.to_string())
write_csv(summary, snakemake.output.summary)
write_csv(best, snakemake.output.best)
