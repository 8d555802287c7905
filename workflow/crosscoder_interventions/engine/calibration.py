"""Calibrated scale (docs/design.md, section 9): per setting, the smallest scale (or steering coefficient)
that brings the target feature's remaining activation to a goal, by bisection on a log scale.

The measurement is the engine's own diagnostic: `target_activation` of `generation.generate` on
calibration prompts with one new token (so only the prompt positions run), averaged over prompts.
Ablation's goal is `fraction` times the un-intervened mean (reached at or below it); steering's an
absolute `target` (reached at or above it).

Shape letters: C candidates (one per hookpoint for single-layer methods, one for many-layer).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformer_lens.model_bridge import TransformerBridge

from crosscoder_interventions.dictionary.model import Dictionary
from crosscoder_interventions.engine.generation import generate
from crosscoder_interventions.engine.interventions import Intervention, Plain, make_setting, swept_parameter
from crosscoder_interventions.errors import ConfigError


@dataclass(frozen=True)
class Calibration:
    settings: list[Intervention]  # at the calibrated values
    goal: float
    reached: list[bool]  # whether the calibrated value was seen to reach the goal (False: `high` never did)


def log_bisect(
    reaches: Callable[[torch.Tensor], torch.Tensor], n_candidates: int, low: float, high: float, iterations: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per candidate, the smallest value in [low, high] found to reach the goal after `iterations`
    halvings of the log interval, and whether any tried value reached it (else the value is `high`).
    `reaches` maps values (C,) to bools (C,); reaching is taken to be monotone in the value."""
    if not 0 < low < high:
        raise ConfigError(f"calibration: need 0 < low < high, got low={low}, high={high}.")
    log_low_C = torch.full((n_candidates,), math.log(low), dtype=torch.float64)
    log_high_C = torch.full((n_candidates,), math.log(high), dtype=torch.float64)
    reached_C = torch.zeros(n_candidates, dtype=torch.bool)
    for _ in range(iterations):
        log_mid_C = (log_low_C + log_high_C) / 2
        ok_C = reaches(log_mid_C.exp())
        log_high_C = torch.where(ok_C, log_mid_C, log_high_C)
        log_low_C = torch.where(ok_C, log_low_C, log_mid_C)
        reached_C |= ok_C
    # Exactly `high` where nothing reached the goal, not exp(log(high)).
    return torch.where(reached_C, log_high_C.exp(), torch.full_like(log_high_C, high)), reached_C


def calibrate(
    bridge: TransformerBridge,
    crosscoder: Dictionary,
    prompts: Sequence[Sequence[int]],
    starts: Sequence[int],
    intervention: str,
    feature: int,
    hookpoints: Sequence[str | None],
    *,
    ablate: bool,
    fraction: float,
    target: float,
    low: float,
    high: float,
    iterations: int,
    max_rows: int = 256,
) -> Calibration:
    """The settings of `intervention` on `feature` (one per hookpoint; None for many-layer methods)
    at their calibrated scale or coefficient, found on `prompts` (token ids, steering from `starts`)."""
    parameter = swept_parameter(intervention)

    def settings_at(values_C: torch.Tensor) -> list[Intervention]:
        return [
            make_setting(intervention, feature=feature, **({"hookpoint": hookpoint} if hookpoint else {}), **{parameter: float(value)})
            for hookpoint, value in zip(hookpoints, values_C.tolist(), strict=True)
        ]

    def mean_target_C(settings: list[Intervention]) -> torch.Tensor:
        result = generate(bridge, crosscoder, prompts, settings, max_new_tokens=1, starts=starts, max_rows=max_rows, progress=False)
        return result.target_activation.mean(1)

    goal = fraction * float(mean_target_C([Plain(feature)])[0]) if ablate else target

    def reaches(values_C: torch.Tensor) -> torch.Tensor:
        remaining_C = mean_target_C(settings_at(values_C)).double()
        return remaining_C <= goal if ablate else remaining_C >= goal

    values_C, reached_C = log_bisect(reaches, len(hookpoints), low, high, iterations)
    return Calibration(settings_at(values_C), goal, reached_C.tolist())
