# %% [markdown]
# # Encoder against decoder
# Per selected feature and hookpoint, the cosine between the feature's encoder column and decoder
# row, and the features whose decoders are nearest to its own with their encoders' cosine to its
# encoder: the marks of feature absorption (docs/design.md, section 9).

# %%
from pathlib import Path

import pandas as pd

from crosscoder_interventions.analysis.comparison_figures import encoder_decoder_figure
from crosscoder_interventions.analysis.encoder_decoder import encoder_decoder_table, similarity_to
from crosscoder_interventions.analysis.scoring import write_csv
from crosscoder_interventions.dictionary.checkpoints import load_crosscoder
from crosscoder_interventions.runtime import start_job, work_begins

log = start_job(snakemake.log[0], threads=1, seed=snakemake.params.seed)
crosscoder = load_crosscoder(**snakemake.params.crosscoder, device=snakemake.params.device)
selected = pd.read_csv(snakemake.input.selected)
work_begins()

# %%
table = encoder_decoder_table(crosscoder, selected)
log.info("encoder against decoder:\n%s", table.to_string())
write_csv(table, snakemake.output.table)

# %%
figures = Path(snakemake.output.figures)
figures.mkdir(parents=True, exist_ok=True)
for feature in selected["feature"]:
    encoder_decoder_figure(table, similarity_to(crosscoder, int(feature)), int(feature), figures / f"feature_{feature}.png")
