"""Typed specifications of the interventions on a crosscoder feature (DESIGN.md sections 3 and 9).

Each method is a frozen dataclass holding the target feature and its hyperparameters. `Plain` is the
un-intervened baseline, so that baselines go through the same generation code. `validate` checks a
setting against a crosscoder and raises one-line `ConfigError`s; `expand_sweep` turns a method and a
list of values (and hookpoints, for the single-layer methods) into settings.

Where an intervention acts:
- ablations (naive single-layer, naive many-layer, perturbation, penalised perturbation, gradient
  ablation) act at every position of prompt and generation;
- steering, clamping and gradient steering act from a per-prompt start position through the end of
  generation.

Gradient ablation and steering use g = dh_i/dx with each hookpoint's activation an input of the
encoder: for a crosscoder's linear encoder that is W_enc[:, :, i] at every position, so they add the
normalised encoder column at every hookpoint, on top of what earlier modifications propagated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from crosscoder_interventions.errors import ConfigError

if TYPE_CHECKING:
    from crosscoder_interventions.dictionary.model import Dictionary


@dataclass(frozen=True)
class Plain:
    """No intervention: the baseline generation; `feature`, if given, is the one its diagnostics report on."""

    feature: int | None = None
    method: ClassVar[str] = "plain"
    acts_from_start: ClassVar[bool] = False


@dataclass(frozen=True)
class SingleLayerAblation:
    """x_n(t) <- x_n(t) - scale * f_i(t) * W_dec[i, n], f_i(t) from run(t) at all hookpoints."""

    feature: int
    hookpoint: str
    scale: float
    method: ClassVar[str] = "single_layer_ablation"
    acts_from_start: ClassVar[bool] = False


@dataclass(frozen=True)
class ManyLayerAblation:
    """x_p(t) <- x_p(t) - scale * f_i(t) * W_dec[i, p] at every hookpoint p."""

    feature: int
    scale: float
    method: ClassVar[str] = "many_layer_ablation"
    acts_from_start: ClassVar[bool] = False


@dataclass(frozen=True)
class PerturbationAblation:
    """delta(t) from `steps` gradient-descent steps (rate `lr`) on f_i(t) of the perturbed run."""

    feature: int
    lr: float
    steps: int
    method: ClassVar[str] = "perturbation_ablation"
    acts_from_start: ClassVar[bool] = False


@dataclass(frozen=True)
class SingleLayerSteering:
    """x_n(t) <- x_n(t) + coef * W_dec[i, n]."""

    feature: int
    hookpoint: str
    coef: float
    method: ClassVar[str] = "single_layer_steering"
    acts_from_start: ClassVar[bool] = True


@dataclass(frozen=True)
class ManyLayerSteering:
    """x_p(t) <- x_p(t) + coef * W_dec[i, p] at every hookpoint p."""

    feature: int
    coef: float
    method: ClassVar[str] = "many_layer_steering"
    acts_from_start: ClassVar[bool] = True


@dataclass(frozen=True)
class PerturbationClamping:
    """delta(t) from `steps` gradient-descent steps (rate `lr`) on (h_i(t) - target)^2, h the pre-activation."""

    feature: int
    target: float
    lr: float
    steps: int
    method: ClassVar[str] = "perturbation_clamping"
    acts_from_start: ClassVar[bool] = True


@dataclass(frozen=True)
class PenalisedPerturbation:
    """As PerturbationAblation, loss f_i(t) + penalty * sum_{j != i} |f_j(t) - f_j(run(t))|; |.|'s gradient at 0 is 0."""

    feature: int
    penalty: float
    lr: float
    steps: int
    method: ClassVar[str] = "penalised_perturbation"
    acts_from_start: ClassVar[bool] = False


@dataclass(frozen=True)
class GradientAblation:
    """x(t) <- x(t) - coef * g / ||g||, g = dh_i/dx(t) over all hookpoints together (W_enc[:, :, i])."""

    feature: int
    coef: float
    method: ClassVar[str] = "gradient_ablation"
    acts_from_start: ClassVar[bool] = False


@dataclass(frozen=True)
class GradientSteering:
    """x(t) <- x(t) + coef * g / ||g||, g = dh_i/dx(t) over all hookpoints together (W_enc[:, :, i])."""

    feature: int
    coef: float
    method: ClassVar[str] = "gradient_steering"
    acts_from_start: ClassVar[bool] = True


Intervention = (
    Plain
    | SingleLayerAblation
    | ManyLayerAblation
    | PerturbationAblation
    | SingleLayerSteering
    | ManyLayerSteering
    | PerturbationClamping
    | PenalisedPerturbation
    | GradientAblation
    | GradientSteering
)
METHODS: dict[str, type] = {
    cls.method: cls
    for cls in (
        Plain,
        SingleLayerAblation,
        ManyLayerAblation,
        PerturbationAblation,
        SingleLayerSteering,
        ManyLayerSteering,
        PerturbationClamping,
        PenalisedPerturbation,
        GradientAblation,
        GradientSteering,
    )
}
SINGLE_LAYER_METHODS = {SingleLayerAblation.method, SingleLayerSteering.method}
# The hyperparameter a sweep varies, per method.
SWEPT_PARAMETER = {
    SingleLayerAblation.method: "scale",
    ManyLayerAblation.method: "scale",
    PerturbationAblation.method: "lr",
    SingleLayerSteering.method: "coef",
    ManyLayerSteering.method: "coef",
    PerturbationClamping.method: "lr",
    PenalisedPerturbation.method: "penalty",
    GradientAblation.method: "coef",
    GradientSteering.method: "coef",
}
GRADIENT_METHODS = (GradientAblation, GradientSteering)


def label(setting: Intervention) -> str:
    """A short human-readable name, e.g. `single_layer_ablation(feature=3, hookpoint=blocks.1.hook_resid_post, scale=2.0)`."""
    fields = ", ".join(f"{name}={value}" for name, value in vars(setting).items())
    return f"{setting.method}({fields})"


def validate(setting: Intervention, crosscoder: Dictionary) -> None:
    """Raise a one-line ConfigError if `setting` cannot be applied with `crosscoder` (its `hookpoints` and F = len(b_enc_F))."""
    if setting.feature is None:
        return
    n_features = int(crosscoder.b_enc_F.shape[0])
    if not 0 <= setting.feature < n_features:
        raise ConfigError(
            f"{label(setting)}: feature {setting.feature} is out of range; the crosscoder has {n_features} features (0..{n_features - 1})."
        )
    hookpoint = getattr(setting, "hookpoint", None)
    if hookpoint is not None and hookpoint not in crosscoder.hookpoints:
        raise ConfigError(
            f"{label(setting)}: the crosscoder has no hookpoint '{hookpoint}'; it has {', '.join(crosscoder.hookpoints)}."
        )
    for name, value in vars(setting).items():
        if name in {"scale", "coef", "lr", "target", "penalty"} and not math.isfinite(value):
            raise ConfigError(f"{label(setting)}: {name} must be a finite number, got {value}.")
    if hasattr(setting, "lr") and setting.lr <= 0:
        raise ConfigError(f"{label(setting)}: the learning rate must be positive, got {setting.lr}.")
    if hasattr(setting, "penalty") and setting.penalty < 0:
        raise ConfigError(f"{label(setting)}: the penalty must be 0 or more, got {setting.penalty}.")
    if hasattr(setting, "steps") and setting.steps < 1:
        raise ConfigError(f"{label(setting)}: steps must be at least 1, got {setting.steps}.")


def make_setting(method: str, **params: object) -> Intervention:
    """The setting of `method` with the given hyperparameters; a ConfigError for an unknown method or parameter."""
    cls = METHODS.get(method)
    if cls is None:
        raise ConfigError(f"unknown intervention method '{method}'; choose one of {', '.join(METHODS)}.")
    try:
        return cls(**params)
    except TypeError as error:
        raise ConfigError(f"intervention '{method}': {error}.") from None


def expand_sweep(
    method: str,
    feature: int,
    values: Sequence[float],
    *,
    hookpoints: Sequence[str] = (),
    steps: int | None = None,
    target: float | None = None,
    lr: float | None = None,
) -> list[Intervention]:
    """One setting per value of the method's swept parameter (scale, coef, lr or penalty), times hookpoints for single-layer methods.

    Perturbation methods take `steps` (clamping its `target`, penalised perturbation its `lr`) as
    fixed parameters of the sweep.
    The order is hookpoint-major, then value.
    """
    if method not in SWEPT_PARAMETER:
        raise ConfigError(f"unknown intervention method '{method}'; choose one of {', '.join(SWEPT_PARAMETER)}.")
    for value in values:
        if not math.isfinite(value):
            raise ConfigError(f"{method} sweep: value {value} is not a finite number.")
    fixed: dict[str, object] = {"feature": feature}
    if method in {PerturbationAblation.method, PerturbationClamping.method, PenalisedPerturbation.method}:
        if steps is None:
            raise ConfigError(f"{method} sweep: give the number of gradient steps (steps).")
        fixed["steps"] = steps
    if method == PerturbationClamping.method:
        if target is None:
            raise ConfigError(f"{method} sweep: give the clamping target (target).")
        fixed["target"] = target
    if method == PenalisedPerturbation.method:
        if lr is None:
            raise ConfigError(f"{method} sweep: give the fixed learning rate (lr).")
        fixed["lr"] = lr
    parameter = SWEPT_PARAMETER[method]
    if method in SINGLE_LAYER_METHODS:
        if not hookpoints:
            raise ConfigError(f"{method} sweep: give at least one hookpoint.")
        return [
            make_setting(method, **fixed, hookpoint=hookpoint, **{parameter: float(value)})
            for hookpoint in hookpoints
            for value in values
        ]
    if hookpoints:
        raise ConfigError(f"{method} acts at every hookpoint; remove the hookpoints from its sweep.")
    return [make_setting(method, **fixed, **{parameter: float(value)}) for value in values]
