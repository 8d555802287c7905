# %% [markdown]
# # Methods compared at equal effect
# Per feature, each method's best setting at equal effect, against the best method's: a paired
# bootstrap interval of the per-prompt CE difference and Wilson intervals of the rates.

# %%
import pandas as pd

from crosscoder_interventions.comparison import compare_methods
from crosscoder_interventions.runtime import start_job
from crosscoder_interventions.scoring import write_csv

log = start_job(snakemake.log[0], threads=1, seed=snakemake.params.seed)
scores = pd.concat([pd.read_parquet(path) for path in snakemake.input.scores], ignore_index=True)

# %%
comparison = compare_methods(scores)
log.info("comparison:\n%s", comparison.to_string())
write_csv(comparison, snakemake.output[0])
