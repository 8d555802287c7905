# %% [markdown]
# # Several worlds side by side
# Every world's summary.csv and findings.csv in one table each, with a `world` column, and each of
# the sprint's findings' verdict in each world (results/cross_world/).

# %%
import pandas as pd

from crosscoder_interventions.analysis.cross_world import stack_worlds, verdicts_by_world
from crosscoder_interventions.analysis.scoring import read_summary, write_csv
from crosscoder_interventions.runtime import start_job, work_begins

log = start_job(snakemake.log[0], threads=1, seed=snakemake.params.seed)
worlds = snakemake.params.worlds
work_begins()

# %%
summary = stack_worlds({world: read_summary(path) for world, path in zip(worlds, snakemake.input.summaries)})
findings = stack_worlds({world: pd.read_csv(path) for world, path in zip(worlds, snakemake.input.findings)})
verdicts = verdicts_by_world(findings)
log.info("verdicts by world:\n%s", verdicts.drop(columns="claim").to_string())
write_csv(summary, snakemake.output.summary)
write_csv(findings, snakemake.output.findings)
write_csv(verdicts, snakemake.output.verdicts)
