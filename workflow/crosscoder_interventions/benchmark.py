"""Speed of intervened generation against plain generation, measured in one process on one batch.

Every entry generates `max_new_tokens` tokens greedily for the same prompts (one row per prompt),
so that times per generated token compare like with like. `ratio_to_plain` is an entry's time per
generated token over that of plain generation through the bridge (`TransformerBridge.generate`
with its key/value cache); raw Hugging Face `generate` is the floor underneath both.

On a GPU the engine's time goes to launching kernels and to the host waiting for the device, so each
entry is also run once more, untimed, counting per generated token the operations it dispatches
(torch's aten operations) and its host synchronisations: on CUDA, those torch's sync debug mode reports;
on the CPU, where the host never waits, the dispatched operations that make a CUDA host wait (reading a
tensor's value into Python, as `.item()` and `bool()` do, and operations whose output size depends on
values: `nonzero`, boolean-mask indexing, `masked_select`, `unique`). `.tolist()` dispatches nothing on
the CPU, so the CPU count misses it.

Shape letters: R rows (prompts), S prompt positions (left-padded).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from matplotlib.patches import Rectangle
from torch.utils._python_dispatch import TorchDispatchMode
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from crosscoder_interventions.analysis.experiment import INTERVENTIONS, job_settings
from crosscoder_interventions.behaviour import padded_batch
from crosscoder_interventions.dictionary.model import Dictionary
from crosscoder_interventions.engine.generation import generate
from crosscoder_interventions.engine.interventions import Intervention, label
from crosscoder_interventions.engine.oracle import reference_generate
from crosscoder_interventions.runtime import device_of, hf_model_of

PLAIN = "bridge_generate"
log = logging.getLogger("crosscoder_interventions")


@dataclass(frozen=True)
class Timing:
    entry: str
    setting: str
    n_prompts: int
    new_tokens: int
    seconds: float
    operations: int
    host_syncs: int
    # Forward passes in sequence: one per new token for a batch, one per new token per prompt for the
    # reference loop, which runs one prompt at a time.
    decode_steps: int


aten = torch.ops.aten
# Operations that make a CUDA host wait for the device whatever their inputs.
SYNCING_OPERATIONS = {
    aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default, aten._unique2.default,
    aten.unique_dim.default, aten.unique_consecutive.default, aten.repeat_interleave.Tensor,
}
# Indexing that does too when an index is a boolean mask (its result's size is the mask's count).
MASK_INDEXING = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default}


class _DispatchCounter(TorchDispatchMode):
    """Counts every aten operation dispatched, and those that would make a CUDA host wait."""

    def __init__(self) -> None:
        super().__init__()
        self.operations = 0
        self.syncing = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]  # torch's own signature
        self.operations += 1
        if func in SYNCING_OPERATIONS or (
            func in MASK_INDEXING and any(index is not None and index.dtype == torch.bool for index in args[1])
        ):
            self.syncing += 1
        return func(*args, **(kwargs or {}))


def count_dispatches(run: Callable[[], object], device: torch.device) -> tuple[int, int]:
    """The aten operations `run` dispatches and its host synchronisations: counted by torch's CUDA sync
    debug mode on CUDA, and as the operations that would synchronise there on the CPU."""
    counter = _DispatchCounter()
    if device.type != "cuda":
        with counter:
            run()
        return counter.operations, counter.syncing
    torch.cuda.synchronize(device)
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with counter:
                run()
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    return counter.operations, sum("synchronizing CUDA operation" in str(warning.message) for warning in caught)


def representative_settings(
    selected: pd.DataFrame, sweeps: dict[str, dict[str, Any]], hookpoints: Sequence[str]
) -> dict[str, Intervention]:
    """Per intervention, the middle setting of its sweep on the first selected feature of its mode."""
    settings = {}
    for (mode, method), intervention in INTERVENTIONS.items():
        features = selected.loc[selected["role"] == mode, "feature"]
        if len(features):
            sweep = job_settings(mode, method, int(features.iloc[0]), sweeps, hookpoints)
            settings[intervention] = sweep[len(sweep) // 2]
    return settings


def _best_seconds(run: Callable[[], object], repeats: int) -> float:
    """The fastest of `repeats` runs: the least disturbed by whatever else the machine does."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def time_generation(
    bridge: TransformerBridge,
    crosscoder: Dictionary,
    prompts: Sequence[Sequence[int]],
    starts: Sequence[int],
    settings: dict[str, Intervention],
    *,
    max_new_tokens: int,
    reference_prompts: int,
    repeats: int = 3,
) -> list[Timing]:
    """Time plain bridge and Hugging Face generation, the fast path under each setting, and the
    reference loop under each setting on the first `reference_prompts` prompts (once: it is slow)."""
    pad_id = bridge.tokenizer.pad_token_id
    tokens_RS, mask_RS = (t.to(device_of(bridge)) for t in padded_batch([list(prompt) for prompt in prompts], pad_id, left=True))

    def bridge_generate() -> None:
        bridge.generate(
            tokens_RS,
            attention_mask=mask_RS,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            stop_at_eos=False,
            use_past_kv_cache=True,
            verbose=False,
        )

    def hf_generate() -> None:
        hf_model_of(bridge).generate(  # type: ignore[operator]  # typed PreTrainedModel lacks GenerationMixin; causal LMs have generate
            input_ids=tokens_RS,
            attention_mask=mask_RS,
            max_new_tokens=max_new_tokens,
            min_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad_id,
        )

    timings: list[Timing] = []
    device = device_of(bridge)

    def record(entry: str, setting: str, n_prompts: int, run: Callable[[], object], times: int, *, batched: bool = True) -> None:
        # One log line per entry as it is measured: a long run shows its progress, and a run stopped
        # part-way still tells what it had measured.
        seconds = _best_seconds(run, times)
        operations, host_syncs = count_dispatches(run, device)
        steps = max_new_tokens if batched else max_new_tokens * n_prompts
        timing = Timing(entry, setting, n_prompts, max_new_tokens * n_prompts, seconds, operations, host_syncs, steps)
        timings.append(timing)
        log.info("timed %s %s: %.3f ms, %.1f operations and %.2f host synchronisations per generated token", entry, setting,
                 1e3 * seconds / timing.new_tokens, operations / timing.new_tokens, host_syncs / timing.new_tokens)

    # Untimed: the first call pays for lazy initialisation (on CUDA the context, kernels, the
    # allocator's pool), a cost of the process rather than of any method, and it would otherwise fall
    # on the denominator of every ratio when repeats is 1.
    bridge_generate()
    record(PLAIN, "", len(prompts), bridge_generate, repeats)
    record("hf_generate", "", len(prompts), hf_generate, repeats)
    for entry, setting in settings.items():
        record(entry, label(setting), len(prompts),
               lambda: generate(bridge, crosscoder, prompts, [setting], max_new_tokens=max_new_tokens, starts=starts, progress=False),  # noqa: B023 (called within this iteration)
               repeats)
    for entry, setting in settings.items() if reference_prompts else ():
        def reference() -> None:
            for prompt, start in tqdm(list(zip(prompts[:reference_prompts], starts)), desc=f"reference {entry}", unit="prompt"):  # noqa: B023
                reference_generate(bridge, crosscoder, prompt, setting, max_new_tokens=max_new_tokens, start=start)  # noqa: B023

        record(f"reference_{entry}", label(setting), reference_prompts, reference, 1, batched=False)
    return timings


def timing_table(timings: Sequence[Timing]) -> pd.DataFrame:
    """One row per entry with tokens per second, ratio to plain bridge generation, and, for
    reference rows, how many times slower than the fast path under the same setting."""
    table = pd.DataFrame([asdict(timing) for timing in timings])
    table["seconds_per_token"] = table["seconds"] / table["new_tokens"]
    table["operations_per_token"] = table["operations"] / table["new_tokens"]
    table["host_syncs_per_token"] = table["host_syncs"] / table["new_tokens"]
    # A batch's rows share each step's launches and waits, so per token they shrink with the batch; per
    # step they do not.
    table["operations_per_step"] = table["operations"] / table["decode_steps"]
    table["host_syncs_per_step"] = table["host_syncs"] / table["decode_steps"]
    table["tokens_per_s"] = 1.0 / table["seconds_per_token"]
    plain = float(table.loc[table["entry"] == PLAIN, "seconds_per_token"].iloc[0])
    table["ratio_to_plain"] = table["seconds_per_token"] / plain
    fast = table.set_index("entry")["seconds_per_token"]
    table["ratio_to_fast"] = [
        row.seconds_per_token / fast[row.entry.removeprefix("reference_")] if row.entry.startswith("reference_") else float("nan")
        for row in table.itertuples()
    ]
    return table


def timing_figure(table: pd.DataFrame) -> plt.Figure:
    """Time per generated token over plain bridge generation, one bar per entry, log scale."""
    height = 0.4 * len(table) + 1.2
    figure, axes = plt.subplots(figsize=(7, height))
    sns.barplot(data=table, y="entry", x="ratio_to_plain", color="tab:blue", ax=axes)
    axes.set_xscale("log")
    axes.axvline(1.0, color="black", linestyle="--", linewidth=1)
    for patch, ratio in zip(axes.patches, table["ratio_to_plain"]):
        assert isinstance(patch, Rectangle)  # a bar plot's patches are its bars
        axes.annotate(f"{ratio:.2f}x" if ratio < 10 else f"{ratio:,.0f}x", (patch.get_width(), patch.get_y() + patch.get_height() / 2), xytext=(3, 0),
                      textcoords="offset points", va="center", fontsize=8)
    axes.set_xlabel("time per generated token / plain bridge generation (log)")
    axes.set_ylabel("")
    plain = table.iloc[0]
    axes.set_title(f"{int(plain['n_prompts'])} prompts, {int(plain['new_tokens'] / plain['n_prompts'])} new tokens each, greedy")
    figure.tight_layout()
    return figure
