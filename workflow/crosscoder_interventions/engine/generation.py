"""Fast generation under crosscoder-feature interventions, exact to the oracle in `oracle`.

Rows are prompt x setting. A whole sweep's rows are generated together: prompts padded, every
setting's hyperparameters as per-row tensors (a hookpoint becomes a one-hot row of a (R, P) table).

How it stays exact while using a key/value cache:
- Attention masks are built from position ids and slot liveness, not from cache slots: a model's
  own masks (causal and sliding window) count cache slots, so each layer's attention is adapted, for
  the duration of a call, to the same computation under our masks (`engine`: the bridge's
  reconstructed attention of Hugging Face causal LMs, Hugging Face's attention interface where the
  bridge delegates to it, GPT-Neo's `_attn`). The cache is ours too: the
  model runs without Hugging Face's (whose API changes between transformers releases) and the
  adapter prepends the slots' keys and values to those of the call's queries. A cache slot is alive when later
  positions may attend to it. A "run" slot (run(t): position t over the intervened prefix, no
  modification at t) is visible only to itself and is cropped away after use; a "redo" slot
  (position t with its modification) is alive. Pad slots are dead and their position ids 0, so
  padding reaches neither attention, nor positions, nor the diagnostics.
- Zero decisions cost nothing: where run(t) decides no modification (f_i(t) = 0 for the naive
  ablations; for perturbation ablation too, since every activation is f_i = h_i * m_i(h) with a
  piecewise-constant gate m_i (JumpReLU, ReLU and BatchTopK: h_i above a threshold; TopK: h_i among
  the k largest and positive; SignedTopK: among the k largest, a gate open at h_i = 0 exactly taken
  as closed), so where f_i is off its gradient is zero and delta stays 0 through
  every step; and for penalised perturbation, whose penalty is then |f_j - f_j(run(t))| = 0 with
  gradient 0), run(t) is the intervened position itself.
- f_i of a per-feature activation (JumpReLU, ReLU, BatchTopK) needs only h_i, one encoder column per
  row; the TopKs' gate needs every feature's h, so there the whole encoder runs (`_target_RQ`).
- Gradient ablation and steering need no decisions either: their direction, the normalised encoder
  column W_enc[:, :, i], is that of every position (see `interventions`).
- One generated position: a run pass, kept as the position's slot. Only if some row decides a
  modification is the slot redone with the decisions (the perturbation's gradient steps run for
  those rows alone). Steering needs no decisions: one pass with the modification.
- A prompt (many known positions): modifications are found by fixed-point (Jacobi) iteration, with
  a commit frontier and windows that grow (see `_extend`). Naive decisions start from
  the plain run's. A run of positions whose decisions depend on each other in turn (the tag's
  tokens) costs one pass per position; rows are laid out (`_layout`) so that these runs share
  columns, and so passes, across the rows of a batch. The plain run, for the diagnostics and the
  first guess, is computed once per distinct prompt.

- The host waits for the device only where a shape or a branch depends on values: once per
  generated position of the decision kinds (which rows to redo), twice per prompt pass, a few times
  per batch. Non-finite values are noted on the device and raised at the end of a batch (`_Faults`),
  and what a batch reports is copied to the host at once.

Diagnostics are those of `oracle.reference_generate`.

Shape letters: R rows, S prompt columns (positions and pads), W a window of them, Q positions of
one forward call, M gathered positions, K cache slots, P hookpoints, D d_model, F features,
V vocabulary, N generated tokens, U distinct prompts, H attention heads, E head dimension.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, cast

import torch
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge

from crosscoder_interventions.dictionary.model import Dictionary
from crosscoder_interventions.engine.adapters import slot_attention
from crosscoder_interventions.engine.interventions import Intervention, Plain, label, validate
from crosscoder_interventions.engine.oracle import acts_from, other_feature_change, unit_mask_P
from crosscoder_interventions.errors import ConfigError

DEFAULT_TOLERANCE = 1e-6
# Prompt positions per Jacobi pass: short enough that passes after a moved decision redo little, long
# enough that stretches without decisions cost few passes.
DEFAULT_WINDOW = 16


class NonFiniteError(RuntimeError):
    """An intervention drove activations or logits to inf or nan; the message names the setting."""


@dataclass(frozen=True)
class Sampling:
    """temperature 0 is greedy; otherwise softmax(logits / temperature) over the top_k tokens (all if None).

    Row noise depends on (seed, prompt index) only, so every setting of a sweep sees the same random
    numbers for the same prompt, whether batched or not (on one device: CUDA draws other numbers).
    """

    temperature: float = 0.0
    top_k: int | None = None
    seed: int = 0


@dataclass
class GenerationResult:
    """Indexed [setting][prompt]. activations: intervened hookpoint activations of every position run (prompt and
    generated tokens but the last), if recorded."""

    settings: list[Intervention]
    generated: list[list[list[int]]]
    target_activation: torch.Tensor  # (n_settings, n_prompts)
    other_feature_change: torch.Tensor  # (n_settings, n_prompts)
    activations: list[list[torch.Tensor]] | None = None
    prompt_passes: list[int] = field(default_factory=list)  # forward passes over prompt windows per batch, for profiling


@dataclass(frozen=True)
class _Row:
    setting: Intervention
    prompt_index: int
    prompt: list[int]
    start: int


@dataclass
class _Plan:
    """Per-row tensors of one batch; `kind` is fixed (plain, steering), naive or perturb. `rows`
    selects rows; `row_R` is each row's index in the batch, for reporting faults."""

    kind: str
    row_R: torch.Tensor
    coef_RP: torch.Tensor  # steering: coef * mask; naive: -scale * mask; gradient ablation: -coef
    direction_RPD: torch.Tensor  # W_dec[i]; the gradient methods' W_enc[:, :, i] / ||W_enc[:, :, i]||
    encoder_RPD: torch.Tensor  # W_enc[:, :, i]
    bias_R: torch.Tensor
    threshold_R: torch.Tensor
    acts_from_R: torch.Tensor
    lr_R: torch.Tensor
    target_R: torch.Tensor
    clamp_R: torch.Tensor  # perturbation loss: (h_i - target)^2 where True, f_i where False
    penalty_R: torch.Tensor  # perturbation loss: + penalty * sum_{j != i} |f_j - f_j(run(t))|
    feature_R: torch.Tensor
    steps: int
    penalised: bool  # some row's loss has the penalty term
    # None for a per-feature activation (f_i = h_i * [h_i > threshold_i]); else the crosscoder,
    # whose whole encoding gives f_i (TopK).
    encoder: Dictionary | None

    def rows(self, index_R: torch.Tensor) -> _Plan:
        per_row = {name: value[index_R] for name, value in vars(self).items() if isinstance(value, torch.Tensor)}
        # per_row holds exactly the tensor fields, so each keeps its type.
        return replace(self, **cast(dict[str, Any], per_row))


@dataclass
class _Slots:
    """The key/value cache, (R, H, K, E) per attention layer (no list entries before the first call),
    and, per slot, its position id and whether later positions attend to it."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    pos_RK: torch.Tensor
    alive_RK: torch.Tensor

    def truncate(self, n_slots: int) -> None:
        # Detached too: slots kept from a gradient step must not drag its graph along.
        self.keys = [keys_RHKE[..., :n_slots, :].detach() for keys_RHKE in self.keys]
        self.values = [values_RHKE[..., :n_slots, :].detach() for values_RHKE in self.values]
        self.pos_RK, self.alive_RK = self.pos_RK[:, :n_slots], self.alive_RK[:, :n_slots]

    def rows(self, index_R: torch.Tensor, column_RK: torch.Tensor | None = None, alive_RK: torch.Tensor | None = None) -> _Slots:
        """A copy whose row r is this row index_R[r]: all its slots, or slot k being column_RK[r, k]
        with liveness alive_RK. A slot's keys and values depend on its position and what it saw, not
        on where it sits, so rearranging them is exact."""
        if column_RK is None:
            column_RK = torch.arange(self.pos_RK.shape[1], device=self.pos_RK.device).expand(len(index_R), -1)
            alive_RK = self.alive_RK[index_R]
        assert alive_RK is not None, "a slot layout comes with its liveness"

        def gathered(layers: list[torch.Tensor]) -> list[torch.Tensor]:
            return [
                x_RHKE[index_R].gather(2, column_RK[:, None, :, None].expand(-1, x_RHKE.shape[1], -1, x_RHKE.shape[3]))
                for x_RHKE in layers
            ]

        return _Slots(gathered(self.keys), gathered(self.values), self.pos_RK[index_R].gather(1, column_RK), alive_RK)


def _set(value_or_none: torch.Tensor | None) -> torch.Tensor:
    """A tensor the engine's invariants guarantee was set: a hookpoint's capture after a forward, a
    row's activations when they are recorded."""
    assert value_or_none is not None
    return value_or_none


def _kind(setting: Intervention) -> tuple[str, int]:
    return setting.kind, getattr(setting, "steps", 0)


class _Engine:
    """One bridge + crosscoder; forward calls over cache slots with per-call modifications and captures."""

    def __init__(self, bridge: TransformerBridge, crosscoder: Dictionary) -> None:
        self.bridge = bridge
        self.crosscoder = crosscoder
        self.hookpoints = list(crosscoder.hookpoints)
        self.device = crosscoder.W_dec_FPD.device
        self.attention = slot_attention(bridge)
        self.add_RQPD: torch.Tensor | None = None
        self.captured: list[torch.Tensor | None] = [None] * len(self.hookpoints)

    def _hook_at(self, p: int) -> Callable:
        def hook(x_RQD: torch.Tensor, hook: object) -> torch.Tensor:
            if self.add_RQPD is not None:
                x_RQD = x_RQD + self.add_RQPD[:, :, p].to(x_RQD.dtype)
            self.captured[p] = x_RQD
            return x_RQD

        return hook

    @contextmanager
    def installed(self) -> Iterator[None]:
        hooks = [(name, self._hook_at(p)) for p, name in enumerate(self.hookpoints)]
        with self.bridge.hooks(fwd_hooks=hooks), self.attention.installed():
            yield

    def empty_slots(self, n_rows: int) -> _Slots:
        return _Slots(
            [],
            [],
            torch.zeros(n_rows, 0, dtype=torch.long, device=self.device),
            torch.zeros(n_rows, 0, dtype=torch.bool, device=self.device),
        )

    def forward(
        self,
        slots: _Slots,
        tokens_RQ: torch.Tensor,
        pos_RQ: torch.Tensor,
        alive_RQ: torch.Tensor,
        add_RQPD: torch.Tensor | None,
        *,
        keep: bool,
        runs: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Logits of the last query (R, V), activations (R, Q, P, D); `keep` appends the slots, else
        they are cropped. `runs` (tokens and positions, (R, M) each) adds run queries after the
        others, unmodified and dead: they see the others' slots of earlier positions, built in this
        very call, and are never kept. Their activations (R, M, P, D) come third."""
        n_old = slots.pos_RK.shape[1]
        n_runs = 0 if runs is None else runs[0].shape[1]
        if runs is not None and n_runs:
            tokens_RQ = torch.cat([tokens_RQ, runs[0]], dim=1)
            pos_RQ = torch.cat([pos_RQ, runs[1]], dim=1)
            alive_RQ = torch.cat([alive_RQ, torch.zeros_like(runs[1], dtype=torch.bool)], dim=1)
            if add_RQPD is not None:
                add_RQPD = torch.cat([add_RQPD, add_RQPD.new_zeros(*runs[1].shape, *add_RQPD.shape[2:])], dim=1)
        key_pos_RK = torch.cat([slots.pos_RK, pos_RQ], dim=1)
        key_alive_RK = torch.cat([slots.alive_RK, alive_RQ], dim=1)
        self.attention.begin(slots, pos_RQ, key_pos_RK, key_alive_RK)
        self.add_RQPD = add_RQPD
        # Only the last non-run query's logits are ever used: skip unembedding the rest.
        logits_RQV = self.bridge(
            tokens_RQ,
            return_type="logits",
            use_cache=False,
            position_ids=pos_RQ,
            attention_mask=self.attention.model_mask_R1QK,
            logits_to_keep=n_runs + 1,
        )
        slots.keys, slots.values = self.attention.collected()
        # In the crosscoder's dtype: decisions and diagnostics are the crosscoder's arithmetic.
        acts_RQPD = torch.stack([_set(x_RQD) for x_RQD in self.captured], dim=2).to(self.crosscoder.W_dec_FPD.dtype)
        self.add_RQPD, self.captured = None, [None] * len(self.hookpoints)
        n_own = tokens_RQ.shape[1] - n_runs
        if keep:
            slots.pos_RK, slots.alive_RK = key_pos_RK, key_alive_RK
            slots.truncate(n_old + n_own)
        else:
            slots.truncate(n_old)
        return logits_RQV[:, 0], acts_RQPD[:, :n_own], acts_RQPD[:, n_own:] if n_runs else None


def _plan(rows: Sequence[_Row], crosscoder: Dictionary) -> _Plan:
    hookpoints = crosscoder.hookpoints
    features = [row.setting.feature if row.setting.feature is not None else 0 for row in rows]
    W_dec_FPD, W_enc_PDF = crosscoder.W_dec_FPD.detach(), crosscoder.W_enc_PDF.detach()
    dtype, device = W_dec_FPD.dtype, W_dec_FPD.device
    per_feature = crosscoder.activation.per_feature

    def coef_P(setting: Intervention) -> torch.Tensor:
        if setting.direction is None:
            return torch.zeros(len(hookpoints))
        return setting.signed_coef * unit_mask_P(setting, hookpoints)

    def direction_PD(setting: Intervention, feature: int) -> torch.Tensor:
        if setting.direction == "encoder":
            encoder_PD = W_enc_PDF[:, :, feature]
            return encoder_PD / encoder_PD.norm()
        return W_dec_FPD[feature]

    settings = [row.setting for row in rows]
    return _Plan(
        kind=_kind(settings[0])[0],
        row_R=torch.arange(len(rows), device=device),
        coef_RP=torch.stack([coef_P(setting) for setting in settings]).to(dtype=dtype, device=device),
        direction_RPD=torch.stack([direction_PD(setting, feature) for setting, feature in zip(settings, features)]),
        encoder_RPD=W_enc_PDF[:, :, features].permute(2, 0, 1),
        bias_R=crosscoder.b_enc_F.detach()[features],
        threshold_R=crosscoder.threshold_F.detach()[features] if per_feature else torch.zeros(len(rows), dtype=dtype, device=device),
        acts_from_R=torch.tensor([acts_from(row.setting, row.start) for row in rows], device=device),
        lr_R=torch.tensor([float(getattr(setting, "lr", 0.0)) for setting in settings], dtype=dtype, device=device),
        target_R=torch.tensor([float(getattr(setting, "target", 0.0)) for setting in settings], dtype=dtype, device=device),
        clamp_R=torch.tensor([setting.objective == "clamp" for setting in settings], device=device),
        penalty_R=torch.tensor([float(getattr(setting, "penalty", 0.0)) for setting in settings], dtype=dtype, device=device),
        feature_R=torch.tensor(features, device=device),
        steps=_kind(settings[0])[1],
        penalised=any(float(getattr(setting, "penalty", 0.0)) != 0 for setting in settings),
        encoder=None if per_feature else crosscoder,
    )


def _pre_activation_RQ(plan: _Plan, acts_RQPD: torch.Tensor) -> torch.Tensor:
    return torch.einsum("rqpd,rpd->rq", acts_RQPD, plan.encoder_RPD) + plan.bias_R[:, None]


def _activated_RQ(plan: _Plan, h_RQ: torch.Tensor, acts_RQPD: torch.Tensor) -> torch.Tensor:
    """f_i of every row's own feature from its pre-activation h_RQ, as Crosscoder.encode."""
    if plan.encoder is None:
        return h_RQ * (h_RQ > plan.threshold_R[:, None])
    f_RQF = plan.encoder.encode(acts_RQPD)
    return f_RQF.gather(2, plan.feature_R[:, None, None].expand(*f_RQF.shape[:2], 1))[..., 0]


def _target_RQ(plan: _Plan, acts_RQPD: torch.Tensor) -> torch.Tensor:
    """f_i of every row's own feature, as Crosscoder.encode."""
    return _activated_RQ(plan, _pre_activation_RQ(plan, acts_RQPD), acts_RQPD)


def _add_RQPD(plan: _Plan, decisions: torch.Tensor | None, applies_RQ: torch.Tensor) -> torch.Tensor | None:
    """The modification of every position from the decisions (f_i for naive, delta for perturb)."""
    on_RQ11 = applies_RQ[:, :, None, None]
    if plan.kind == "perturb":
        assert decisions is not None, "perturbation decides its delta"
        return decisions * on_RQ11
    unit_RQPD = (plan.coef_RP[:, :, None] * plan.direction_RPD)[:, None] * on_RQ11
    if plan.kind == "fixed":
        return unit_RQPD
    assert decisions is not None, "naive interventions decide f_i"
    return decisions[:, :, None, None] * unit_RQPD


@dataclass
class _Faults:
    """Per row of a batch and per kind of value, whether it has gone non-finite: noted on the device
    and raised once, at the end of the batch (`check`), since a check at every step would make the
    host wait for the device at every step. A non-finite value breaks nothing on its way there."""

    labels: list[str]
    bad: dict[str, torch.Tensor] = field(default_factory=dict)

    def note(self, plan: _Plan, finite_R: torch.Tensor, what: str) -> None:
        """Whether `what` is finite in each row of `plan` (a selection of the batch's rows, or all of them)."""
        seen_R = self.bad.get(what)
        if seen_R is None:
            seen_R = torch.zeros(len(self.labels), dtype=torch.bool, device=finite_R.device)
        self.bad[what] = seen_R.index_put((plan.row_R,), seen_R[plan.row_R] | ~finite_R)

    def check(self) -> None:
        """Raise for the first kind of value noted non-finite, naming its first row's setting."""
        for what, bad_R in self.bad.items():
            bad = bad_R.nonzero()
            if len(bad):
                raise NonFiniteError(f"{self.labels[int(bad[0, 0])]} made {what} non-finite; lower its scale, coefficient or learning rate.")


def _descend(
    engine: _Engine,
    plan: _Plan,
    slots: _Slots,
    tokens_RQ: torch.Tensor,
    pos_RQ: torch.Tensor,
    applies_RQ: torch.Tensor,
    faults: _Faults,
) -> torch.Tensor:
    """The perturbation delta (R, Q, P, D) of every query: `steps` gradient steps on run(t) over the
    slots' (intervened) prefix. Queries do not see each other, so each gets its own gradient. The
    first step's delta is 0, so its encoding is that of run(t), the penalty's reference."""
    dead_RQ = torch.zeros_like(applies_RQ)
    delta_RQPD = plan.direction_RPD.new_zeros(*tokens_RQ.shape, *plan.direction_RPD.shape[1:])
    on_RQ = applies_RQ.to(delta_RQPD.dtype)
    finite_R = torch.ones(len(plan.row_R), dtype=torch.bool, device=delta_RQPD.device)
    if plan.penalised:
        n_features = engine.crosscoder.b_enc_F.shape[0]
        others_RF = torch.ones(len(plan.feature_R), n_features, dtype=delta_RQPD.dtype, device=delta_RQPD.device)
        others_RF[torch.arange(len(plan.feature_R), device=delta_RQPD.device), plan.feature_R] = 0
    for step in range(plan.steps):
        delta_RQPD.requires_grad_(True)
        with torch.enable_grad():
            _, acts_RQPD, _ = engine.forward(slots, tokens_RQ, pos_RQ, dead_RQ, delta_RQPD, keep=False)
            h_RQ = _pre_activation_RQ(plan, acts_RQPD)
            f_RQ = _activated_RQ(plan, h_RQ, acts_RQPD)
            loss_RQ = torch.where(plan.clamp_R[:, None], (h_RQ - plan.target_R[:, None]) ** 2, f_RQ) * on_RQ
            if plan.penalised:
                f_RQF = engine.crosscoder.encode(acts_RQPD)
                if step == 0:
                    plain_RQF = f_RQF.detach()
                change_RQ = ((f_RQF - plain_RQF).abs() * others_RF[:, None]).sum(-1)
                loss_RQ = loss_RQ + plan.penalty_R[:, None] * change_RQ * on_RQ
            (grad_RQPD,) = torch.autograd.grad(loss_RQ.sum(), delta_RQPD)
        delta_RQPD = (delta_RQPD - plan.lr_R[:, None, None, None] * grad_RQPD).detach()
        finite_R &= torch.isfinite(delta_RQPD.flatten(1).sum(1) + loss_RQ.detach().sum(1))
    faults.note(plan, finite_R, "the perturbation")
    return delta_RQPD


def _needs_work_RQ(plan: _Plan, target_RQ: torch.Tensor, applies_RQ: torch.Tensor) -> torch.Tensor:
    """Where a position run with no modification of its own, whose target activation f_i is `target_RQ`,
    would decide a nonzero modification.

    Elsewhere the decision is zero without further work: f_i = 0 for the naive ablations, and for
    perturbation ablation the gradient of f_i is zero where its gate is off, so delta stays 0
    (penalised too: at delta = 0 every |f_j - f_j(run(t))| is 0, whose gradient is taken as 0).
    Clamping's loss (h_i - target)^2 has a gradient wherever it applies.
    """
    if plan.kind == "perturb":
        return applies_RQ & (plan.clamp_R[:, None] | (target_RQ != 0))
    return applies_RQ & (target_RQ != 0)


@dataclass
class _Gathered:
    """Per row, the columns where `mask_RQ` holds, first and in order, up to the busiest row's count;
    the others fill in, as queries that apply nowhere."""

    order_RM: torch.Tensor
    taken_RM: torch.Tensor

    @classmethod
    def where(cls, mask_RQ: torch.Tensor) -> _Gathered:
        n_gathered = int(mask_RQ.sum(1).max()) if mask_RQ.numel() else 0
        order_RM = torch.sort((~mask_RQ).to(torch.int8), dim=1, stable=True).indices[:, :n_gathered]
        return cls(order_RM, torch.gather(mask_RQ, 1, order_RM))

    def take(self, value_RQ: torch.Tensor) -> torch.Tensor:
        return torch.gather(value_RQ, 1, self.order_RM)

    def put(self, into_RQ: torch.Tensor, value_RM: torch.Tensor) -> None:
        # A scatter of every gathered column, the fill-ins writing back what they hold: a boolean
        # mask's indexing would make the host wait for the device.
        order_RM = self.order_RM.reshape(*self.order_RM.shape, *[1] * (into_RQ.ndim - 2)).expand(*self.order_RM.shape, *into_RQ.shape[2:])
        taken_RM = self.taken_RM.reshape(order_RM.shape[:2] + (1,) * (into_RQ.ndim - 2))
        into_RQ.scatter_(1, order_RM, torch.where(taken_RM, value_RM, into_RQ.gather(1, order_RM)))


def _changed_Q(plan: _Plan, new: torch.Tensor, old: torch.Tensor, tolerance: float) -> torch.Tensor:
    """Per position (over all rows), whether a decision moved by more than `tolerance` (relative)."""
    moved = (new - old).abs() > tolerance * (1 + old.abs())
    return moved.flatten(2).any(2).any(0) if plan.kind == "perturb" else moved.any(0)


def _nonzero_RQ(plan: _Plan, decisions: torch.Tensor) -> torch.Tensor:
    return decisions.flatten(2).ne(0).any(2) if plan.kind == "perturb" else decisions.ne(0)


def _extend(
    engine: _Engine,
    plan: _Plan,
    slots: _Slots,
    tokens_RQ: torch.Tensor,
    pos_RQ: torch.Tensor,
    real_RQ: torch.Tensor,
    applies_RQ: torch.Tensor,
    plain_RQPD: torch.Tensor,
    plain_logits_RV: torch.Tensor,
    settled: int,
    tolerance: float,
    window: int,
    faults: _Faults,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Append the intervened slots of Q prompt positions. Returns the last position's logits (R, V),
    the intervened acts (R, Q, P, D) and the number of forward passes over prompt windows.

    The first `settled` columns decide nothing, so they are the plain run: for the decision kinds
    the slots hold them already (and the last position's logits are the plain ones if all are).

    Jacobi iteration with a commit frontier: a pass redoes the window [start, start + window) under
    the current decisions and decides anew: where a position was not modified its activations are
    run(t), so the naive decision reads off them and a perturbation descends only where it has work
    to do; modified positions get run queries (for the naive ablations, in the same call, after the
    window). Positions before the first one whose decision moved are exact (their prefix is, and
    their decision did not move): their slots are kept and the frontier advances to that position,
    whose new decision is exact too. A window in which no decision moves is kept whole. Naive
    decisions start from the plain run's (exact at the first unsettled column, whose prefix is
    plain), deltas from zero. The window starts at `window` (2 after settled columns) and doubles
    after a pass that keeps it whole: long passes where decisions settle at once. After a pass in
    which a decision moved, the next starts at that position with the same width: its head is
    exact, the next position's new decision then is too, and the positions after get decisions made
    under a nearer prefix, often final. So a chain of dependent decisions (such as the tokens of the
    deployment tag) costs a pass per link, and what follows it fewer passes than if the window
    started small again; positions past a moved decision are computed in vain, which costs
    arithmetic, cheap on a GPU, rather than passes, whose launches and waits are what a small
    model's GPU time is made of.

    A pass makes the host wait for the device twice: for the number of run queries, and for where
    the first decision moved.
    """
    if plan.kind == "fixed":
        logits_RV, acts_RQPD, _ = engine.forward(slots, tokens_RQ, pos_RQ, real_RQ, _add_RQPD(plan, None, applies_RQ), keep=True)
        return logits_RV, acts_RQPD, 1
    if plan.kind == "naive":
        decisions = _target_RQ(plan, plain_RQPD) * applies_RQ
    else:
        decisions = plan.direction_RPD.new_zeros(*tokens_RQ.shape, *plan.direction_RPD.shape[1:])
    n_queries = tokens_RQ.shape[1]
    kept_acts, n_passes, start, head_exact = [plain_RQPD[:, :settled]], 0, settled, settled > 0 and plan.kind == "naive"
    logits_RV = plain_logits_RV
    # Settled columns end where some row's first decision is: a chain starts there.
    window = 2 if settled else window
    while start < n_queries:
        columns = slice(start, min(start + window, n_queries))
        tokens_RW, pos_RW, applies_RW = tokens_RQ[:, columns], pos_RQ[:, columns], applies_RQ[:, columns]
        n_kept = slots.pos_RK.shape[1]
        current = decisions[:, columns]
        modified_RW = _nonzero_RQ(plan, current)
        # A decision made over the exact prefix is final: the head's needs no recomputing.
        known_RW = torch.zeros_like(modified_RW)
        known_RW[:, 0] = head_exact
        # Adding zeros where nothing is modified is exact, and cheaper than asking the device whether so.
        add_RWPD = _add_RQPD(plan, current, applies_RW)
        if plan.kind == "naive":
            runs = _Gathered.where(modified_RW & applies_RW & ~known_RW)
            logits_RV, acts_RWPD, run_RMPD = engine.forward(
                slots, tokens_RW, pos_RW, real_RQ[:, columns], add_RWPD, keep=True, runs=(runs.take(tokens_RW), runs.take(pos_RW))
            )
            new = torch.where(known_RW, current, _target_RQ(plan, acts_RWPD) * applies_RW)
            if run_RMPD is not None:
                runs.put(new, _target_RQ(plan, run_RMPD))
        else:
            logits_RV, acts_RWPD, _ = engine.forward(slots, tokens_RW, pos_RW, real_RQ[:, columns], add_RWPD, keep=True)
            new = current * known_RW[:, :, None, None]
            runs = _Gathered.where(applies_RW & ~known_RW & (modified_RW | _needs_work_RQ(plan, _target_RQ(plan, acts_RWPD), applies_RW)))
            if runs.order_RM.shape[1]:
                runs.put(new, _descend(engine, plan, slots, runs.take(tokens_RW), runs.take(pos_RW), runs.taken_RM, faults))
        n_passes += 1
        changed_W = _changed_Q(plan, new, current, tolerance)
        # The window's width where no decision moved.
        first = int(torch.where(changed_W.any(), changed_W.to(torch.int8).argmax(), len(changed_W)))
        if first == len(changed_W):
            kept_acts.append(acts_RWPD)
            start, head_exact, window = columns.stop, False, 2 * window
            continue
        slots.truncate(n_kept + first)
        kept_acts.append(acts_RWPD[:, :first])
        decisions[:, start + first : columns.stop] = new[:, first:]
        start, head_exact = start + first, True
    return logits_RV, torch.cat(kept_acts, dim=1), n_passes


def _step(
    engine: _Engine,
    plan: _Plan,
    slots: _Slots,
    tokens_R1: torch.Tensor,
    pos_R1: torch.Tensor,
    applies_R1: torch.Tensor,
    faults: _Faults,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Append the intervened slot of one generated position: logits (R, V) and acts (R, 1, P, D).

    The run pass is kept as if it were the redo: where the decision is zero it is. Only when some
    row decides a modification is the slot redone, and perturbation steps run for those rows only.
    Which rows those are is the step's one wait of the host for the device (none for fixed additions).
    """
    real_R1 = torch.ones_like(applies_R1)
    if plan.kind == "fixed":
        return engine.forward(slots, tokens_R1, pos_R1, real_R1, _add_RQPD(plan, None, applies_R1), keep=True)[:2]
    n_old = slots.pos_RK.shape[1]
    logits_RV, acts_R1PD, _ = engine.forward(slots, tokens_R1, pos_R1, real_R1, None, keep=True)
    target_R1 = _target_RQ(plan, acts_R1PD)
    busy = _needs_work_RQ(plan, target_R1, applies_R1)[:, 0].nonzero()[:, 0]
    if not len(busy):
        return logits_RV, acts_R1PD
    slots.truncate(n_old)
    if plan.kind == "naive":
        decisions = target_R1 * applies_R1
    else:
        decisions = plan.direction_RPD.new_zeros(*tokens_R1.shape, *plan.direction_RPD.shape[1:])
        decisions[busy] = _descend(engine, plan.rows(busy), slots.rows(busy), tokens_R1[busy], pos_R1[busy], applies_R1[busy], faults)
    return engine.forward(slots, tokens_R1, pos_R1, real_R1, _add_RQPD(plan, decisions, applies_R1), keep=True)[:2]


def _layout(
    prompts: Sequence[Sequence[int]], anchor_R: Sequence[int], resume_R: Sequence[int], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokens, position ids (0 on pads) and realness, each (R, S), of prompts laid out so that every
    row's `anchor` position falls in one column and every row ends in the last column.

    Pads go before each prompt and before its position `resume` (>= anchor). Pads are dead slots and
    masks follow position ids, so where pads sit changes no result, only which positions share a
    column. Anchors 0 and resumes 0 give plain left padding.
    """
    anchor_column = max(anchor_R)
    n_columns = max(anchor_column - anchor + len(prompt) for prompt, anchor in zip(prompts, anchor_R, strict=True))
    source_rows = []
    for prompt, anchor, resume in zip(prompts, anchor_R, resume_R, strict=True):
        lead = anchor_column - anchor
        gap = n_columns - lead - len(prompt)
        source_rows.append([-1] * lead + list(range(resume)) + [-1] * gap + list(range(resume, len(prompt))))
    source_RS = torch.tensor(source_rows)
    real_RS = source_RS >= 0
    tokens_RS = torch.tensor([[prompt[i] if i >= 0 else pad_id for i in row] for prompt, row in zip(prompts, source_RS.tolist())])
    return tokens_RS, source_RS.clamp_min(0), real_RS


def _anchors(busy_RS: torch.Tensor, pos_RS: torch.Tensor, lengths: Sequence[int]) -> tuple[list[int], list[int], bool]:
    """Per row, the first and one past the last position needing decisions (at most the last
    position); rows with none anchor at the latest first position of the others (or their last
    position), so that they add no columns. Third, whether any row needs decisions."""
    first_R = torch.where(busy_RS, pos_RS, torch.iinfo(pos_RS.dtype).max).amin(1)
    last_R = torch.where(busy_RS, pos_RS, -1).amax(1)
    # One copy to the host: the layout is the host's to make.
    first_R, last_R, busy_R = torch.stack([first_R, last_R, busy_RS.any(1).to(first_R.dtype)]).tolist()
    latest = max((first for first, busy in zip(first_R, busy_R) if busy), default=0)
    anchor_R = [first if busy else min(length - 1, latest) for first, busy, length in zip(first_R, busy_R, lengths)]
    # Every row's last token must stay in the last column, after the pads.
    resume_R = [min(last + 1 if busy else anchor, length - 1) for last, busy, anchor, length in zip(last_R, busy_R, anchor_R, lengths)]
    return anchor_R, resume_R, any(busy_R)


def choose_tokens(logits_RV: torch.Tensor, sampling: Sampling, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Each row's next token: the argmax at temperature 0, else a draw from softmax(logits / T) over its top_k."""
    if sampling.temperature == 0:
        return logits_RV.argmax(-1)
    # Gumbel-max: argmax(logits / T + G) is a draw from softmax(logits / T), with per-row noise. Below T = 1
    # the same argmax is taken of logits + T G, since logits / T overflows for a tiny T (every token
    # infinite, the first one then chosen) where T G only vanishes (the argmax, as the limit T -> 0 is).
    # The top_k mask comes last: -inf / T is NaN where T overflows the logits' dtype.
    gumbel_RV = -torch.stack(
        [torch.empty(logits_RV.shape[1], device=logits_RV.device).exponential_(generator=generator) for generator in generators]
    ).clamp_min(1e-30).log()
    temperature = sampling.temperature
    keys_RV = logits_RV / temperature + gumbel_RV if temperature >= 1 else logits_RV + temperature * gumbel_RV
    if sampling.top_k is not None and sampling.top_k < logits_RV.shape[-1]:  # a top_k past the vocabulary keeps it all
        kth_R1 = logits_RV.topk(sampling.top_k, dim=-1).values[:, -1:]
        keys_RV = keys_RV.masked_fill(logits_RV < kth_R1, float("-inf"))
    return keys_RV.argmax(-1)


@dataclass
class _RowOutput:
    generated: list[int]
    target_activation: float
    other_feature_change: float
    acts_SPD: torch.Tensor | None


@dataclass
class _PlainRun:
    """The un-intervened prompts, run once per distinct prompt (U of them) in plain left padding."""

    acts_RSPD: torch.Tensor
    logits_RV: torch.Tensor
    slots: _Slots  # U rows
    unique_R: torch.Tensor  # each row's distinct prompt


def _plain_run(
    engine: _Engine, prompt_index_R: Sequence[int], tokens_RS: torch.Tensor, pos_RS: torch.Tensor, real_RS: torch.Tensor
) -> _PlainRun:
    first_row: dict[int, int] = {}
    for row, prompt_index in enumerate(prompt_index_R):
        first_row.setdefault(prompt_index, row)
    unique = {prompt_index: u for u, prompt_index in enumerate(first_row)}
    first_U = torch.tensor(list(first_row.values()), device=engine.device)
    unique_R = torch.tensor([unique[prompt_index] for prompt_index in prompt_index_R], device=engine.device)
    slots = engine.empty_slots(len(first_U))
    logits_UV, acts_USPD, _ = engine.forward(slots, tokens_RS[first_U], pos_RS[first_U], real_RS[first_U], None, keep=True)
    return _PlainRun(acts_USPD[unique_R], logits_UV[unique_R], slots, unique_R)


def _generate_batch(
    engine: _Engine,
    rows: Sequence[_Row],
    max_new_tokens: int,
    sampling: Sampling,
    record: bool,
    tolerance: float,
    window: int,
    progress: tqdm,
) -> tuple[list[_RowOutput], int]:
    plan = _plan(rows, engine.crosscoder)
    pad_id = engine.bridge.tokenizer.pad_token_id
    pad_id = pad_id if pad_id is not None else 0
    prompts, lengths = [row.prompt for row in rows], [len(row.prompt) for row in rows]
    tokens_RS, pos_RS, real_RS = (t.to(engine.device) for t in _layout(prompts, [0] * len(rows), [0] * len(rows), pad_id))
    plain = _plain_run(engine, [row.prompt_index for row in rows], tokens_RS, pos_RS, real_RS)
    plain_RSPD, slots, settled = plain.acts_RSPD, engine.empty_slots(len(rows)), 0
    if plan.kind != "fixed":
        # Chains of dependent decisions (the tag's tokens) cost one pass per link: align them across
        # rows so that rows share the passes. S now counts the columns of this layout.
        applies_RS = real_RS & (pos_RS >= plan.acts_from_R[:, None])
        busy_RS = _needs_work_RQ(plan, _target_RQ(plan, plain_RSPD), applies_RS)
        anchor_R, resume_R, any_busy = _anchors(busy_RS, pos_RS, lengths)
        tokens_RS, pos_RS, aligned_RS = (t.to(engine.device) for t in _layout(prompts, anchor_R, resume_R, pad_id))
        # Where each aligned column's position sits in the plain (left-padded) layout.
        plain_column_RS = torch.where(aligned_RS, pos_RS + real_RS.shape[1] - torch.tensor(lengths, device=engine.device)[:, None], 0)
        aligned_RSPD = plain_RSPD.gather(1, plain_column_RS[:, :, None, None].expand(-1, -1, *plain_RSPD.shape[2:]))
        aligned_RSPD = aligned_RSPD * aligned_RS[:, :, None, None]
        # Before the anchors' column (everywhere, if nothing is busy) no row decides anything: the
        # intervened run is the plain one there, whose slots are reused.
        settled = max(anchor_R) if any_busy else tokens_RS.shape[1]
        slots = plain.slots.rows(plain.unique_R, plain_column_RS[:, :settled], aligned_RS[:, :settled])
        plain_RSPD, real_RS = aligned_RSPD, aligned_RS
    applies_RS = real_RS & (pos_RS >= plan.acts_from_R[:, None])
    faults = _Faults([label(row.setting) for row in rows])
    logits_RV, acts_RSPD, n_passes = _extend(
        engine, plan, slots, tokens_RS, pos_RS, real_RS, applies_RS, plain_RSPD, plain.logits_RV, settled, tolerance, window, faults
    )
    target_sum_R = (_target_RQ(plan, acts_RSPD) * applies_RS).sum(1)
    count_R = applies_RS.sum(1)
    generators = [
        torch.Generator(device=tokens_RS.device).manual_seed(sampling.seed * 1_000_003 + row.prompt_index) for row in rows
    ]
    generated, step_acts = [], []
    pos_R1 = torch.tensor(lengths, device=engine.device)[:, None] - 1
    for step in range(max_new_tokens):
        faults.note(plan, torch.isfinite(logits_RV.sum(1)), "the logits")
        tokens_R1 = choose_tokens(logits_RV, sampling, generators)[:, None]
        generated.append(tokens_R1)
        progress.update(1)
        if step == max_new_tokens - 1:
            break
        pos_R1 = pos_R1 + 1
        applies_R1 = pos_R1 >= plan.acts_from_R[:, None]
        logits_RV, acts_R1PD = _step(engine, plan, slots, tokens_R1, pos_R1, applies_R1, faults)
        target_sum_R += (_target_RQ(plan, acts_R1PD) * applies_R1).sum(1)
        count_R += applies_R1.sum(1)
        if record:
            step_acts.append(acts_R1PD)
    faults.check()
    generated_acts_RNPD = torch.cat(step_acts, dim=1) if step_acts else acts_RSPD[:, :0]
    encode = engine.crosscoder.encode
    # One row at a time bounds the memory of the encodings (S, F).
    change_R = torch.stack([
        acts_RSPD.new_zeros(()) if isinstance(row.setting, Plain)
        else other_feature_change(encode(acts_RSPD[r]), encode(plain_RSPD[r]), row.setting.feature, real_RS[r])
        for r, row in enumerate(rows)
    ])
    # One copy to the host of everything the rows report.
    tokens, targets, changes = torch.cat(generated, dim=1).tolist(), (target_sum_R / count_R).tolist(), change_R.tolist()
    outputs = []
    for r, row in enumerate(rows):
        target = targets[r] if row.setting.feature is not None else float("nan")
        acts_SPD = torch.cat([acts_RSPD[r, real_RS[r]], generated_acts_RNPD[r]]) if record else None
        outputs.append(_RowOutput(tokens[r], target, changes[r], acts_SPD))
    return outputs, n_passes


def _batches(rows: Sequence[_Row], max_rows: int) -> list[list[int]]:
    """Row indices grouped by what a batch must share (kind, gradient steps), at most max_rows each."""
    groups: dict[tuple[str, int], list[int]] = {}
    for index, row in enumerate(rows):
        groups.setdefault(_kind(row.setting), []).append(index)
    return [indices[i : i + max_rows] for indices in groups.values() for i in range(0, len(indices), max_rows)]


@torch.no_grad()
def generate(
    bridge: TransformerBridge,
    crosscoder: Dictionary,
    prompts: Sequence[Sequence[int]],
    settings: Sequence[Intervention],
    *,
    max_new_tokens: int,
    starts: Sequence[int] | None = None,
    sampling: Sampling = Sampling(),
    max_rows: int = 256,
    record_activations: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
    window: int = DEFAULT_WINDOW,
    progress: bool = True,
) -> GenerationResult:
    """Generate `max_new_tokens` tokens for every prompt under every setting (no stop at eos).

    starts[k]: first position of prompt k that steering and clamping act on (default 0).
    max_rows bounds the rows (prompt x setting) of one batch, i.e. memory. tolerance (relative) and
    window (positions of the first pass over a prompt) steer its fixed-point iteration: see `_extend`.
    """
    if window < 1:
        raise ConfigError(f"window must be at least 1, got {window}.")
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be at least 1, got {max_new_tokens}.")
    if any(len(prompt) == 0 for prompt in prompts):
        raise ConfigError("every prompt needs at least one token.")
    # A prompt and its whole continuation must fit the context: the base model scores them together.
    context = bridge.cfg.n_ctx
    too_long = next((k for k, prompt in enumerate(prompts) if len(prompt) + max_new_tokens > context), None)
    if too_long is not None:
        raise ConfigError(
            f"prompt {too_long} is {len(prompts[too_long])} tokens, which with {max_new_tokens} new ones is more than the model's context "
            f"of {context} positions; lower max_new_tokens or shorten the prompt."
        )
    starts = list(starts) if starts is not None else [0] * len(prompts)
    if len(starts) != len(prompts):
        raise ConfigError(f"got {len(starts)} steering starts for {len(prompts)} prompts.")
    for setting in settings:
        validate(setting, crosscoder)
    rows = [
        _Row(setting, k, list(prompt), start)
        for setting in settings
        for k, (prompt, start) in enumerate(zip(prompts, starts, strict=True))
    ]
    engine = _Engine(bridge, crosscoder)
    batches = _batches(rows, max_rows)
    outputs: list[_RowOutput | None] = [None] * len(rows)
    passes = []
    with engine.installed(), tqdm(total=max_new_tokens * len(batches), unit="token", disable=not progress) as bar:
        for indices in batches:
            batch_outputs, n_passes = _generate_batch(
                engine, [rows[i] for i in indices], max_new_tokens, sampling, record_activations, tolerance, window, bar
            )
            passes.append(n_passes)
            for i, output in zip(indices, batch_outputs, strict=True):
                outputs[i] = output
    done = [output for output in outputs if output is not None]
    assert len(done) == len(outputs), "every row belongs to one batch"
    n_prompts = len(prompts)
    grid = [done[s * n_prompts : (s + 1) * n_prompts] for s in range(len(settings))]
    return GenerationResult(
        settings=list(settings),
        generated=[[output.generated for output in line] for line in grid],
        target_activation=torch.tensor([[output.target_activation for output in line] for line in grid]),
        other_feature_change=torch.tensor([[output.other_feature_change for output in line] for line in grid]),
        activations=[[_set(output.acts_SPD) for output in line] for line in grid] if record_activations else None,
        prompt_passes=passes,
    )
