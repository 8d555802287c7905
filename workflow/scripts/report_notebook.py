# %% [markdown]
# # The report notebook
# Executes workflow/notebooks/report.py on this run's results into results/report.ipynb and an
# HTML copy.

# %%
from pathlib import Path

from crosscoder_interventions.analysis.notebook import execute_notebook
from crosscoder_interventions.runtime import start_job, work_begins

log = start_job(snakemake.log[0], threads=1, seed=snakemake.params.seed)
results = Path(snakemake.input.summary).parent
parameters = {"RESULTS": str(results), "N_COMPLETIONS": snakemake.params.report["n_completions"]}
log.info("executing %s with %s", snakemake.input.notebook, parameters)
work_begins()

# %%
execute_notebook(snakemake.input.notebook, parameters, snakemake.output.notebook, snakemake.output.html)
