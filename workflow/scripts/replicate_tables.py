# %% [markdown]
# # The findings over the replicates
# Each replicate's verdicts in one table (results/replicates/verdicts.csv), and per finding how many
# replicates gave each verdict (results/replicates/robustness.csv, robustness.png).

# %%
import pandas as pd

from crosscoder_interventions.analysis.replicates import replicate_verdicts, robustness, robustness_figure
from crosscoder_interventions.analysis.scoring import write_csv
from crosscoder_interventions.runtime import start_job, work_begins

log = start_job(snakemake.log[0], threads=1, seed=snakemake.params.seed)
findings = {name: pd.read_csv(path, dtype={"finding": str}) for name, path in zip(snakemake.params.replicates, snakemake.input.findings)}
work_begins()

# %%
verdicts = replicate_verdicts(findings)
table = robustness(verdicts)
log.info("each finding over %d replicates:\n%s", len(findings), table.to_string())
write_csv(verdicts, snakemake.output.verdicts)
write_csv(table, snakemake.output.robustness)
robustness_figure(table, snakemake.output.figure)
