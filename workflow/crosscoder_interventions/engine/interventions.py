"""Typed specifications of the interventions on a crosscoder feature (docs/design.md, sections 3 and 9).

Each method is a frozen dataclass holding the target feature and its hyperparameters. `Plain` is the
un-intervened baseline, so that baselines go through the same generation code. Each class's class
attributes (see `Method`) are all the engine, the oracle and the sweeps dispatch on; `METHODS` is the
one registry, from method name to class. `validate` checks a setting against a crosscoder and raises
one-line `ConfigError`s; `expand_sweep` turns a method and a list of values (and hookpoints, for the
single-layer methods) into settings.

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
from typing import TYPE_CHECKING, Any, ClassVar

from crosscoder_interventions.errors import ConfigError

if TYPE_CHECKING:
    from crosscoder_interventions.dictionary.model import Dictionary


class Method:
    """What dispatch needs from a method, as class attributes; the defaults are those of `Plain`.

    - `swept`: the hyperparameter a sweep varies (and calibration searches); None for `Plain`.
    - `single_layer`: acts at the one hookpoint its `hookpoint` field names, not at every hookpoint.
    - `acts_from_start`: acts from the per-prompt start position, not from position 0.
    - `kind`: what the fast path batches by: "fixed" (an addition independent of the activations:
      plain, steering, gradient methods), "naive" (f_i(t) times a decoder row) or "perturb" (gradient
      descent on a perturbation).
    - `direction`: what a fixed or naive method adds: the decoder row W_dec[i] ("decoder") or the
      normalised encoder column W_enc[:, :, i] ("encoder"); None where nothing fixed is added.
    - `sign`: -1 where `direction` is subtracted (ablation), +1 where it is added (steering).
    - `objective`: a perturbation's loss: f_i ("activation"), (h_i - target)^2 ("clamp"), or f_i plus
      the penalty on the other features ("penalised").
    """

    method: ClassVar[str]
    swept: ClassVar[str | None] = None
    single_layer: ClassVar[bool] = False
    acts_from_start: ClassVar[bool] = False
    kind: ClassVar[str] = "fixed"
    direction: ClassVar[str | None] = None
    sign: ClassVar[float] = 0.0
    objective: ClassVar[str | None] = None

    @property
    def signed_coef(self) -> float:
        """`sign` times the swept parameter: what `direction` is multiplied by (times f_i(t) for naive methods)."""
        return self.sign * float(getattr(self, self.swept)) if self.swept is not None else 0.0


@dataclass(frozen=True)
class Plain(Method):
    """No intervention: the baseline generation; `feature`, if given, is the one its diagnostics report on."""

    feature: int | None = None
    method: ClassVar[str] = "plain"


@dataclass(frozen=True)
class SingleLayerAblation(Method):
    """x_n(t) <- x_n(t) - scale * f_i(t) * W_dec[i, n], f_i(t) from run(t) at all hookpoints."""

    feature: int
    hookpoint: str
    scale: float
    method: ClassVar[str] = "single_layer_ablation"
    swept: ClassVar[str | None] = "scale"
    single_layer: ClassVar[bool] = True
    kind: ClassVar[str] = "naive"
    direction: ClassVar[str | None] = "decoder"
    sign: ClassVar[float] = -1.0


@dataclass(frozen=True)
class ManyLayerAblation(Method):
    """x_p(t) <- x_p(t) - scale * f_i(t) * W_dec[i, p] at every hookpoint p."""

    feature: int
    scale: float
    method: ClassVar[str] = "many_layer_ablation"
    swept: ClassVar[str | None] = "scale"
    kind: ClassVar[str] = "naive"
    direction: ClassVar[str | None] = "decoder"
    sign: ClassVar[float] = -1.0


@dataclass(frozen=True)
class PerturbationAblation(Method):
    """delta(t) from `steps` gradient-descent steps (rate `lr`) on f_i(t) of the perturbed run."""

    feature: int
    lr: float
    steps: int
    method: ClassVar[str] = "perturbation_ablation"
    swept: ClassVar[str | None] = "lr"
    kind: ClassVar[str] = "perturb"
    objective: ClassVar[str | None] = "activation"


@dataclass(frozen=True)
class SingleLayerSteering(Method):
    """x_n(t) <- x_n(t) + coef * W_dec[i, n]."""

    feature: int
    hookpoint: str
    coef: float
    method: ClassVar[str] = "single_layer_steering"
    acts_from_start: ClassVar[bool] = True
    swept: ClassVar[str | None] = "coef"
    single_layer: ClassVar[bool] = True
    direction: ClassVar[str | None] = "decoder"
    sign: ClassVar[float] = 1.0


@dataclass(frozen=True)
class ManyLayerSteering(Method):
    """x_p(t) <- x_p(t) + coef * W_dec[i, p] at every hookpoint p."""

    feature: int
    coef: float
    method: ClassVar[str] = "many_layer_steering"
    acts_from_start: ClassVar[bool] = True
    swept: ClassVar[str | None] = "coef"
    direction: ClassVar[str | None] = "decoder"
    sign: ClassVar[float] = 1.0


@dataclass(frozen=True)
class PerturbationClamping(Method):
    """delta(t) from `steps` gradient-descent steps (rate `lr`) on (h_i(t) - target)^2, h the pre-activation."""

    feature: int
    target: float
    lr: float
    steps: int
    method: ClassVar[str] = "perturbation_clamping"
    acts_from_start: ClassVar[bool] = True
    swept: ClassVar[str | None] = "lr"
    kind: ClassVar[str] = "perturb"
    objective: ClassVar[str | None] = "clamp"


@dataclass(frozen=True)
class PenalisedPerturbation(Method):
    """As PerturbationAblation, loss f_i(t) + penalty * sum_{j != i} |f_j(t) - f_j(run(t))|; |.|'s gradient at 0 is 0."""

    feature: int
    penalty: float
    lr: float
    steps: int
    method: ClassVar[str] = "penalised_perturbation"
    swept: ClassVar[str | None] = "penalty"
    kind: ClassVar[str] = "perturb"
    objective: ClassVar[str | None] = "penalised"


@dataclass(frozen=True)
class GradientAblation(Method):
    """x(t) <- x(t) - coef * g / ||g||, g = dh_i/dx(t) over all hookpoints together (W_enc[:, :, i])."""

    feature: int
    coef: float
    method: ClassVar[str] = "gradient_ablation"
    swept: ClassVar[str | None] = "coef"
    direction: ClassVar[str | None] = "encoder"
    sign: ClassVar[float] = -1.0


@dataclass(frozen=True)
class GradientSteering(Method):
    """x(t) <- x(t) + coef * g / ||g||, g = dh_i/dx(t) over all hookpoints together (W_enc[:, :, i])."""

    feature: int
    coef: float
    method: ClassVar[str] = "gradient_steering"
    acts_from_start: ClassVar[bool] = True
    swept: ClassVar[str | None] = "coef"
    direction: ClassVar[str | None] = "encoder"
    sign: ClassVar[float] = 1.0


# The methods whose modification is found by gradient descent; each has its own loss's fields.
Perturbation = PerturbationAblation | PerturbationClamping | PenalisedPerturbation
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
METHODS: dict[str, type[Intervention]] = {
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


def make_setting(method: str, **params: Any) -> Intervention:
    """The setting of `method` with the given hyperparameters; a ConfigError for an unknown method or parameter."""
    cls = METHODS.get(method)
    if cls is None:
        raise ConfigError(f"unknown intervention method '{method}'; choose one of {', '.join(METHODS)}.")
    try:
        return cls(**params)
    except TypeError as error:
        raise ConfigError(f"intervention '{method}': {error}.") from None


def swept_parameter(method: str) -> str:
    """The hyperparameter a sweep of `method` varies; a ConfigError for an unknown method or `plain`."""
    swept = METHODS[method].swept if method in METHODS else None
    if swept is None:
        choices = [name for name, cls in METHODS.items() if cls.swept is not None]
        raise ConfigError(f"unknown intervention method '{method}'; choose one of {', '.join(choices)}.")
    return swept


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
    parameter = swept_parameter(method)
    cls = METHODS[method]
    for value in values:
        if not math.isfinite(value):
            raise ConfigError(f"{method} sweep: value {value} is not a finite number.")
    fixed: dict[str, object] = {"feature": feature}
    if cls.kind == "perturb":
        if steps is None:
            raise ConfigError(f"{method} sweep: give the number of gradient steps (steps).")
        fixed["steps"] = steps
    if cls.objective == "clamp":
        if target is None:
            raise ConfigError(f"{method} sweep: give the clamping target (target).")
        fixed["target"] = target
    if cls.kind == "perturb" and cls.swept != "lr":
        if lr is None:
            raise ConfigError(f"{method} sweep: give the fixed learning rate (lr).")
        fixed["lr"] = lr
    if cls.single_layer:
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
