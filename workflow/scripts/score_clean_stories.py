# %% [markdown]
# # The base model on clean stories
# The reference CE every intervention is measured against (docs/design.md, section 4): the base model's
# mean per-token cross-entropy on the stories of clean evaluation examples, each cut to as many
# tokens as a generated continuation.

# %%
from crosscoder_interventions.analysis.scoring import load_scorer, score_clean_stories
from crosscoder_interventions.data import read_examples
from crosscoder_interventions.runtime import start_job, work_begins

log = start_job(snakemake.log[0], threads=snakemake.threads, seed=snakemake.params.seed)
cfg = snakemake.params.scoring
base = snakemake.params.base
model, tokenizer = load_scorer(base.source, base.lora_adapter, snakemake.params.device)
work_begins()

# %%
scores = score_clean_stories(
    model,
    tokenizer,
    read_examples(snakemake.params.eval_data),
    n_examples=cfg["n_clean_examples"],
    max_tokens=snakemake.params.max_tokens,
    batch_size=cfg["batch_size"],
)
log.info("%d clean stories scored: mean CE %.4f", len(scores), scores["ce"].mean())
scores.to_parquet(snakemake.output[0])
