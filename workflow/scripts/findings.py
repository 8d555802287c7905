# %% [markdown]
# # The sprint's findings on this run
# One row per finding of the research sprint (DESIGN.md section 8): the statistic that tests it on
# this run's summary, its value with its uncertainty, the threshold that decides, and the verdict.

# %%
import pandas as pd

from crosscoder_interventions.findings import findings_table
from crosscoder_interventions.runtime import start_job
from crosscoder_interventions.scoring import read_summary, write_csv

log = start_job(snakemake.log[0], threads=1, seed=snakemake.params.seed)
summary = read_summary(snakemake.input.summary)
selected = pd.read_csv(snakemake.input.selected)

# %%
findings = findings_table(summary, selected, snakemake.params.world)
log.info("findings:\n%s", findings[["finding", "feature", "verdict", "value"]].to_string())
write_csv(findings, snakemake.output[0])
