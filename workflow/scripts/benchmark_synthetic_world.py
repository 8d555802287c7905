# %% [markdown]
# # A random-weight world for the benchmark
# A GPT-Neo of the configured shape and a crosscoder of the configured width, both of random weights,
# random prompts, and one planted target feature firing on the configured fraction of prompt
# positions (see `crosscoder_interventions.world.synthetic`). Nothing is downloaded.

# %%
import json

from crosscoder_interventions.runtime import start_job, work_begins
from crosscoder_interventions.world.synthetic import build_synthetic_world

log = start_job(snakemake.log[0], threads=snakemake.threads, seed=snakemake.params.seed)
work_begins()
stats = build_synthetic_world(
    snakemake.output.world,
    snakemake.params.synthetic,
    n_prompts=snakemake.params.n_prompts,
    steer_start_offset=snakemake.params.steer_start_offset,
    device=snakemake.params.device,
    seed=snakemake.params.seed,
)
log.info("%s", stats)
with open(snakemake.output.stats, "w") as handle:
    json.dump(stats, handle, indent=2)
