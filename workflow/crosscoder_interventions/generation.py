"""Fast generation under crosscoder-feature interventions, exact to the oracle in `reference`.

Rows are prompt x setting. A whole sweep's rows are generated together: prompts left-padded, every
setting's hyperparameters as per-row tensors (a hookpoint becomes a one-hot row of a (R, P) table).

How it stays exact while using a key/value cache:
- Attention masks are built from position ids and slot liveness, not from cache slots: GPT-Neo's
  own masks (causal and sliding window) count cache slots, so its `_attn` is replaced, for the
  duration of a call, by the same computation under our masks. A cache slot is alive when later
  positions may attend to it. A "run" slot (run(t): position t over the intervened prefix, no
  modification at t) is visible only to itself and is cropped away after use; a "redo" slot
  (position t with its modification) is alive. Pad slots are dead and their position ids 0, so
  padding reaches neither attention, nor positions, nor the diagnostics.
- One generated position: a run pass decides the modification (nothing for steering, f_i(t) for
  the naive ablations, `steps` gradient steps for the perturbations), then a redo pass appends the
  intervened slot and gives the logits.
- A prompt (Q > 1 known tokens): modifications are found by Jacobi iteration over positions. Given
  decisions D_j for all positions, one redo pass over all positions applies them, one run pass
  (queries attending to the redo slots of earlier positions) gives D_{j+1}(t) = decision of run(t)
  over the D_j-intervened prefix. By causality D_j is exact at positions < j, so iteration Q is exact;
  the loop stops earlier once D_{j+1} equals D_j within `tolerance` (relative), D_j then being the
  fixed point, which is unique. The first redo pass (D_0 = 0) is the plain run, reused for the
  diagnostics. Steering and plain generation need no decisions: one parallel prefill.

Diagnostics are those of `reference.reference_generate`.

Shape letters: R rows, S prompt positions (padded), Q positions of one forward call, K cache
slots, P hookpoints, D d_model, F features, V vocabulary, N generated tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm
from transformer_lens.model_bridge import TransformerBridge
from transformers.cache_utils import DynamicCache
from transformers.models.gpt_neo.modeling_gpt_neo import GPTNeoSelfAttention

from crosscoder_interventions.errors import ConfigError
from crosscoder_interventions.interventions import (
    Intervention,
    ManyLayerAblation,
    PerturbationAblation,
    PerturbationClamping,
    Plain,
    SingleLayerAblation,
    SingleLayerSteering,
    label,
    validate,
)
from crosscoder_interventions.reference import acts_from, other_feature_change, unit_mask_P

DEFAULT_TOLERANCE = 1e-6


class NonFiniteError(RuntimeError):
    """An intervention drove activations or logits to inf or nan; the message names the setting."""


@dataclass(frozen=True)
class Sampling:
    """temperature 0 is greedy; otherwise softmax(logits / temperature) over the top_k tokens (all if None).

    Row noise depends on (seed, prompt index) only, so every setting of a sweep sees the same random
    numbers for the same prompt, whether batched or not.
    """

    temperature: float = 0.0
    top_k: int | None = None
    seed: int = 0


@dataclass
class GenerationResult:
    """Indexed [setting][prompt]. activations: intervened hookpoint activations of every position run (prompt and generated tokens but the last), if recorded."""

    settings: list[Intervention]
    generated: list[list[list[int]]]
    target_activation: torch.Tensor  # (n_settings, n_prompts)
    other_feature_change: torch.Tensor  # (n_settings, n_prompts)
    activations: list[list[torch.Tensor]] | None = None
    prompt_iterations: list[int] = field(default_factory=list)  # Jacobi iterations per batch, for profiling


@dataclass(frozen=True)
class _Row:
    setting: Intervention
    prompt_index: int
    prompt: list[int]
    start: int


@dataclass
class _Plan:
    """Per-row tensors of one batch; `kind` is fixed (plain, steering), naive or perturb."""

    kind: str
    labels: list[str]
    coef_RP: torch.Tensor  # steering: coef * mask; naive: -scale * mask
    direction_RPD: torch.Tensor  # W_dec[i]
    encoder_RPD: torch.Tensor  # W_enc[:, :, i]
    bias_R: torch.Tensor
    threshold_R: torch.Tensor
    acts_from_R: torch.Tensor
    lr_R: torch.Tensor
    target_R: torch.Tensor
    clamp_R: torch.Tensor  # perturbation loss: (h_i - target)^2 where True, f_i where False
    steps: int


@dataclass
class _Slots:
    """The key/value cache and, per slot, its position id and whether later positions attend to it."""

    cache: DynamicCache
    pos_RK: torch.Tensor
    alive_RK: torch.Tensor

    def truncate(self, n_slots: int) -> None:
        # Detached too: slots kept from a gradient step must not drag its graph along.
        for layer in self.cache.layers:
            layer.keys = layer.keys[..., :n_slots, :].detach()
            layer.values = layer.values[..., :n_slots, :].detach()
        self.pos_RK, self.alive_RK = self.pos_RK[:, :n_slots], self.alive_RK[:, :n_slots]


def _kind(setting: Intervention) -> tuple[str, int]:
    if isinstance(setting, (SingleLayerAblation, ManyLayerAblation)):
        return "naive", 0
    if isinstance(setting, (PerturbationAblation, PerturbationClamping)):
        return "perturb", setting.steps
    return "fixed", 0


class _PositionMaskedAttention:
    """GPT-Neo attention under masks given per call (R, 1, Q, K) for global and local layers."""

    def __init__(self, bridge: TransformerBridge) -> None:
        self.modules = [m for m in bridge.original_model.modules() if isinstance(m, GPTNeoSelfAttention)]
        if not self.modules:
            raise ConfigError(
                f"fast intervened generation supports GPT-Neo models only, not {type(bridge.original_model).__name__}; "
                "use crosscoder_interventions.reference for other architectures."
            )
        self.window = bridge.original_model.config.window_size
        self.masks: dict[str, torch.Tensor] = {}

    def set_masks(self, query_pos_RQ: torch.Tensor, key_pos_RK: torch.Tensor, key_alive_RK: torch.Tensor) -> None:
        """Query q sees itself (the last Q keys are the queries' own slots) and alive keys of earlier positions."""
        n_queries, n_keys = query_pos_RQ.shape[1], key_pos_RK.shape[1]
        earlier_RQK = key_alive_RK[:, None, :] & (key_pos_RK[:, None, :] < query_pos_RQ[:, :, None])
        own_QK = torch.zeros(n_queries, n_keys, dtype=torch.bool)
        own_QK[:, n_keys - n_queries :] = torch.eye(n_queries, dtype=torch.bool)
        visible_RQK = earlier_RQK | own_QK
        near_RQK = (query_pos_RQ[:, :, None] - key_pos_RK[:, None, :]) < self.window
        self.masks = {"global": visible_RQK[:, None], "local": (visible_RQK & near_RQK)[:, None]}

    def attention_of(self, module: GPTNeoSelfAttention) -> Callable:
        """GPTNeoSelfAttention._attn with the slot-based masks replaced by ours (no scaling, as GPT-Neo)."""

        def attn(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: object = None):
            weights = torch.matmul(query.to(torch.float32), key.to(torch.float32).transpose(-1, -2))
            weights = weights.masked_fill(~self.masks[module.attention_type], torch.finfo(weights.dtype).min)
            weights = nn.functional.softmax(weights, dim=-1).to(value.dtype)
            weights = module.attn_dropout(weights)
            return torch.matmul(weights, value), weights

        return attn

    @contextmanager
    def installed(self) -> Iterator[None]:
        for module in self.modules:
            module._attn = self.attention_of(module)
        try:
            yield
        finally:
            for module in self.modules:
                del module._attn


class _Engine:
    """One bridge + crosscoder; forward calls over cache slots with per-call modifications and captures."""

    def __init__(self, bridge: TransformerBridge, crosscoder: nn.Module) -> None:
        self.bridge = bridge
        self.crosscoder = crosscoder
        self.hookpoints = list(crosscoder.hookpoints)
        self.attention = _PositionMaskedAttention(bridge)
        self.add_RQPD: torch.Tensor | None = None
        self.captured: list[torch.Tensor | None] = [None] * len(self.hookpoints)

    def _hook_at(self, p: int) -> Callable:
        def hook(x_RQD: torch.Tensor, hook: object) -> torch.Tensor:
            if self.add_RQPD is not None:
                x_RQD = x_RQD + self.add_RQPD[:, :, p]
            self.captured[p] = x_RQD
            return x_RQD

        return hook

    @contextmanager
    def installed(self) -> Iterator[None]:
        hooks = [(name, self._hook_at(p)) for p, name in enumerate(self.hookpoints)]
        with self.bridge.hooks(fwd_hooks=hooks), self.attention.installed():
            yield

    def empty_slots(self, n_rows: int) -> _Slots:
        return _Slots(DynamicCache(), torch.zeros(n_rows, 0, dtype=torch.long), torch.zeros(n_rows, 0, dtype=torch.bool))

    def forward(
        self,
        slots: _Slots,
        tokens_RQ: torch.Tensor,
        pos_RQ: torch.Tensor,
        alive_RQ: torch.Tensor,
        add_RQPD: torch.Tensor | None,
        *,
        keep: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of the last query (R, V) and activations (R, Q, P, D); `keep` appends the slots, else they are cropped."""
        n_old = slots.pos_RK.shape[1]
        key_pos_RK = torch.cat([slots.pos_RK, pos_RQ], dim=1)
        key_alive_RK = torch.cat([slots.alive_RK, alive_RQ], dim=1)
        self.attention.set_masks(pos_RQ, key_pos_RK, key_alive_RK)
        self.add_RQPD = add_RQPD
        # Only the last query's logits are ever used: skip unembedding the rest.
        logits_RQV, _ = self.bridge(
            tokens_RQ,
            return_type="logits_and_cache",
            past_key_values=slots.cache,
            position_ids=pos_RQ,
            logits_to_keep=1,
        )
        acts_RQPD = torch.stack(self.captured, dim=2)
        self.add_RQPD, self.captured = None, [None] * len(self.hookpoints)
        if keep:
            slots.pos_RK, slots.alive_RK = key_pos_RK, key_alive_RK
        else:
            slots.truncate(n_old)
        return logits_RQV[:, -1], acts_RQPD


def _plan(rows: Sequence[_Row], crosscoder: nn.Module) -> _Plan:
    hookpoints = crosscoder.hookpoints
    features = [row.setting.feature if row.setting.feature is not None else 0 for row in rows]
    W_dec_FPD, W_enc_PDF = crosscoder.W_dec_FPD.detach(), crosscoder.W_enc_PDF.detach()

    def coef_P(setting: Intervention) -> torch.Tensor:
        if isinstance(setting, (SingleLayerAblation, ManyLayerAblation)):
            return -setting.scale * unit_mask_P(setting, hookpoints)
        if isinstance(setting, Plain) or not hasattr(setting, "coef"):
            return torch.zeros(len(hookpoints))
        return setting.coef * unit_mask_P(setting, hookpoints)

    settings = [row.setting for row in rows]
    return _Plan(
        kind=_kind(settings[0])[0],
        labels=[label(setting) for setting in settings],
        coef_RP=torch.stack([coef_P(setting) for setting in settings]),
        direction_RPD=W_dec_FPD[features],
        encoder_RPD=W_enc_PDF[:, :, features].permute(2, 0, 1),
        bias_R=crosscoder.b_enc_F.detach()[features],
        threshold_R=crosscoder.log_threshold_F.detach()[features].exp(),
        acts_from_R=torch.tensor([acts_from(row.setting, row.start) for row in rows]),
        lr_R=torch.tensor([float(getattr(setting, "lr", 0.0)) for setting in settings]),
        target_R=torch.tensor([float(getattr(setting, "target", 0.0)) for setting in settings]),
        clamp_R=torch.tensor([isinstance(setting, PerturbationClamping) for setting in settings]),
        steps=_kind(settings[0])[1],
    )


def _pre_activation_RQ(plan: _Plan, acts_RQPD: torch.Tensor) -> torch.Tensor:
    return torch.einsum("rqpd,rpd->rq", acts_RQPD, plan.encoder_RPD) + plan.bias_R[:, None]


def _target_RQ(plan: _Plan, acts_RQPD: torch.Tensor) -> torch.Tensor:
    """f_i of every row's own feature, JumpReLU as Crosscoder.encode."""
    h_RQ = _pre_activation_RQ(plan, acts_RQPD)
    return h_RQ * (h_RQ > plan.threshold_R[:, None])


def _add_RQPD(plan: _Plan, decisions: torch.Tensor | None, applies_RQ: torch.Tensor) -> torch.Tensor | None:
    """The modification of every position from the decisions (f_i for naive, delta for perturb)."""
    on_RQ11 = applies_RQ[:, :, None, None]
    if plan.kind == "perturb":
        return decisions * on_RQ11
    unit_RQPD = (plan.coef_RP[:, :, None] * plan.direction_RPD)[:, None] * on_RQ11
    return unit_RQPD if plan.kind == "fixed" else decisions[:, :, None, None] * unit_RQPD


def _check_finite(plan: _Plan, value_R: torch.Tensor, what: str) -> None:
    bad = (~torch.isfinite(value_R)).nonzero()
    if len(bad):
        raise NonFiniteError(f"{plan.labels[int(bad[0, 0])]} made {what} non-finite; lower its scale, coefficient or learning rate.")


def _decide(
    engine: _Engine, plan: _Plan, slots: _Slots, tokens_RQ: torch.Tensor, pos_RQ: torch.Tensor, applies_RQ: torch.Tensor
) -> torch.Tensor:
    """Decisions from run(t) of every query over the slots' (intervened) prefix: f_i (R, Q) or delta (R, Q, P, D)."""
    dead_RQ = torch.zeros_like(applies_RQ)
    if plan.kind == "naive":
        _, acts_RQPD = engine.forward(slots, tokens_RQ, pos_RQ, dead_RQ, None, keep=False)
        return _target_RQ(plan, acts_RQPD) * applies_RQ
    n_rows, n_queries = tokens_RQ.shape
    delta_RQPD = torch.zeros(n_rows, n_queries, len(engine.hookpoints), plan.direction_RPD.shape[2])
    on_RQ = applies_RQ.to(delta_RQPD.dtype)
    for _ in range(plan.steps):
        delta_RQPD.requires_grad_(True)
        with torch.enable_grad():
            _, acts_RQPD = engine.forward(slots, tokens_RQ, pos_RQ, dead_RQ, delta_RQPD, keep=False)
            h_RQ = _pre_activation_RQ(plan, acts_RQPD)
            f_RQ = h_RQ * (h_RQ > plan.threshold_R[:, None])
            loss_RQ = torch.where(plan.clamp_R[:, None], (h_RQ - plan.target_R[:, None]) ** 2, f_RQ) * on_RQ
            # Queries do not see each other, so the summed loss gives every position its own gradient.
            (grad_RQPD,) = torch.autograd.grad(loss_RQ.sum(), delta_RQPD)
        delta_RQPD = (delta_RQPD - plan.lr_R[:, None, None, None] * grad_RQPD).detach()
        _check_finite(plan, delta_RQPD.flatten(1).sum(1) + loss_RQ.detach().sum(1), "the perturbation")
    return delta_RQPD


def _converged(new: torch.Tensor, old: torch.Tensor, tolerance: float) -> bool:
    return bool(((new - old).abs() <= tolerance * (1 + old.abs())).all())


def _extend(
    engine: _Engine,
    plan: _Plan,
    slots: _Slots,
    tokens_RQ: torch.Tensor,
    pos_RQ: torch.Tensor,
    real_RQ: torch.Tensor,
    applies_RQ: torch.Tensor,
    tolerance: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Append the intervened slots of Q prompt positions. Returns logits (R, V), intervened and plain acts (R, Q, P, D), iterations."""
    if plan.kind == "fixed":
        add_RQPD = _add_RQPD(plan, None, applies_RQ)
        intervenes = bool(add_RQPD.any())
        logits_RV, acts_RQPD = engine.forward(slots, tokens_RQ, pos_RQ, real_RQ, add_RQPD if intervenes else None, keep=True)
        if not intervenes:
            return logits_RV, acts_RQPD, acts_RQPD, 1
        plain_slots = engine.empty_slots(len(tokens_RQ))
        _, plain_RQPD = engine.forward(plain_slots, tokens_RQ, pos_RQ, real_RQ, None, keep=False)
        return logits_RV, acts_RQPD, plain_RQPD, 1
    n_queries = tokens_RQ.shape[1]
    n_old = slots.pos_RK.shape[1]
    shape = (*tokens_RQ.shape, len(engine.hookpoints), plan.direction_RPD.shape[2])
    decisions = torch.zeros(shape if plan.kind == "perturb" else tokens_RQ.shape)
    plain_RQPD = None
    for iteration in range(n_queries + 1):
        add_RQPD = None if iteration == 0 else _add_RQPD(plan, decisions, applies_RQ)
        logits_RV, acts_RQPD = engine.forward(slots, tokens_RQ, pos_RQ, real_RQ, add_RQPD, keep=True)
        plain_RQPD = acts_RQPD if plain_RQPD is None else plain_RQPD
        if iteration == n_queries:
            break
        if iteration == 0 and plan.kind == "naive":
            # Over the un-intervened prefix run(t) is the plain pass just done: no run pass needed.
            new_decisions = _target_RQ(plan, acts_RQPD) * applies_RQ
        else:
            new_decisions = _decide(engine, plan, slots, tokens_RQ, pos_RQ, applies_RQ)
        if _converged(new_decisions, decisions, tolerance):
            break
        slots.truncate(n_old)
        decisions = new_decisions
    return logits_RV, acts_RQPD, plain_RQPD, iteration + 1


def _step(
    engine: _Engine, plan: _Plan, slots: _Slots, tokens_R1: torch.Tensor, pos_R1: torch.Tensor, applies_R1: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Append the intervened slot of one generated position: logits (R, V) and acts (R, 1, P, D)."""
    real_R1 = torch.ones_like(applies_R1)
    # The prefix is final, so one run pass decides exactly.
    decisions = None if plan.kind == "fixed" else _decide(engine, plan, slots, tokens_R1, pos_R1, applies_R1)
    return engine.forward(slots, tokens_R1, pos_R1, real_R1, _add_RQPD(plan, decisions, applies_R1), keep=True)


def _left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokens, position ids (0 on pads) and realness, each (R, S)."""
    n_positions = max(len(prompt) for prompt in prompts)
    n_pad_R1 = torch.tensor([n_positions - len(prompt) for prompt in prompts])[:, None]
    tokens_RS = torch.tensor([[pad_id] * (n_positions - len(prompt)) + list(prompt) for prompt in prompts])
    index_S = torch.arange(n_positions)
    real_RS = index_S >= n_pad_R1
    return tokens_RS, (index_S - n_pad_R1).clamp_min(0), real_RS


def _choose(logits_RV: torch.Tensor, sampling: Sampling, generators: Sequence[torch.Generator]) -> torch.Tensor:
    if sampling.temperature == 0:
        return logits_RV.argmax(-1)
    scaled_RV = logits_RV / sampling.temperature
    if sampling.top_k is not None:
        kth_R1 = scaled_RV.topk(sampling.top_k, dim=-1).values[:, -1:]
        scaled_RV = scaled_RV.masked_fill(scaled_RV < kth_R1, float("-inf"))
    # Gumbel-max: argmax(logits / T + G) is a draw from softmax(logits / T), with per-row noise.
    exponential_RV = torch.stack(
        [torch.empty(logits_RV.shape[1]).exponential_(generator=generator) for generator in generators]
    )
    return (scaled_RV - exponential_RV.clamp_min(1e-30).log()).argmax(-1)


@dataclass
class _RowOutput:
    generated: list[int]
    target_activation: float
    other_feature_change: float
    acts_SPD: torch.Tensor | None


def _generate_batch(
    engine: _Engine,
    rows: Sequence[_Row],
    max_new_tokens: int,
    sampling: Sampling,
    record: bool,
    tolerance: float,
    progress: tqdm,
) -> tuple[list[_RowOutput], int]:
    plan = _plan(rows, engine.crosscoder)
    pad_id = engine.bridge.tokenizer.pad_token_id
    tokens_RS, pos_RS, real_RS = _left_pad([row.prompt for row in rows], pad_id if pad_id is not None else 0)
    applies_RS = real_RS & (pos_RS >= plan.acts_from_R[:, None])
    slots = engine.empty_slots(len(rows))
    logits_RV, acts_RSPD, plain_RSPD, iterations = _extend(
        engine, plan, slots, tokens_RS, pos_RS, real_RS, applies_RS, tolerance
    )
    target_sum_R = (_target_RQ(plan, acts_RSPD) * applies_RS).sum(1)
    count_R = applies_RS.sum(1)
    generators = [torch.Generator().manual_seed(sampling.seed * 1_000_003 + row.prompt_index) for row in rows]
    generated, step_acts = [], []
    pos_R1 = torch.tensor([len(row.prompt) for row in rows])[:, None] - 1
    for step in range(max_new_tokens):
        _check_finite(plan, logits_RV.sum(1), "the logits")
        tokens_R1 = _choose(logits_RV, sampling, generators)[:, None]
        generated.append(tokens_R1)
        progress.update(1)
        if step == max_new_tokens - 1:
            break
        pos_R1 = pos_R1 + 1
        applies_R1 = pos_R1 >= plan.acts_from_R[:, None]
        logits_RV, acts_R1PD = _step(engine, plan, slots, tokens_R1, pos_R1, applies_R1)
        target_sum_R += (_target_RQ(plan, acts_R1PD) * applies_R1).sum(1)
        count_R += applies_R1.sum(1)
        if record:
            step_acts.append(acts_R1PD)
    generated_RN = torch.cat(generated, dim=1)
    generated_acts_RNPD = torch.cat(step_acts, dim=1) if step_acts else acts_RSPD[:, :0]
    outputs = []
    for r, row in enumerate(rows):
        feature = row.setting.feature
        prompt_SPD = acts_RSPD[r, real_RS[r]]
        if isinstance(row.setting, Plain):
            change = 0.0
        else:
            change = other_feature_change(
                engine.crosscoder.encode(prompt_SPD), engine.crosscoder.encode(plain_RSPD[r, real_RS[r]]), feature
            )
        target = float(target_sum_R[r] / count_R[r]) if feature is not None else float("nan")
        acts_SPD = torch.cat([prompt_SPD, generated_acts_RNPD[r]]) if record else None
        outputs.append(_RowOutput(generated_RN[r].tolist(), target, change, acts_SPD))
    return outputs, iterations


def _batches(rows: Sequence[_Row], max_rows: int) -> list[list[int]]:
    """Row indices grouped by what a batch must share (kind, gradient steps), at most max_rows each."""
    groups: dict[tuple[str, int], list[int]] = {}
    for index, row in enumerate(rows):
        groups.setdefault(_kind(row.setting), []).append(index)
    return [indices[i : i + max_rows] for indices in groups.values() for i in range(0, len(indices), max_rows)]


@torch.no_grad()
def generate(
    bridge: TransformerBridge,
    crosscoder: nn.Module,
    prompts: Sequence[Sequence[int]],
    settings: Sequence[Intervention],
    *,
    max_new_tokens: int,
    starts: Sequence[int] | None = None,
    sampling: Sampling = Sampling(),
    max_rows: int = 256,
    record_activations: bool = False,
    tolerance: float = DEFAULT_TOLERANCE,
    progress: bool = True,
) -> GenerationResult:
    """Generate `max_new_tokens` tokens for every prompt under every setting (no stop at eos).

    starts[k]: first position of prompt k that steering and clamping act on (default 0).
    max_rows bounds the rows (prompt x setting) of one batch, i.e. memory.
    """
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be at least 1, got {max_new_tokens}.")
    if any(len(prompt) == 0 for prompt in prompts):
        raise ConfigError("every prompt needs at least one token.")
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
    iterations = []
    with engine.installed(), tqdm(total=max_new_tokens * len(batches), unit="token", disable=not progress) as bar:
        for indices in batches:
            batch_outputs, n_iterations = _generate_batch(
                engine, [rows[i] for i in indices], max_new_tokens, sampling, record_activations, tolerance, bar
            )
            iterations.append(n_iterations)
            for i, output in zip(indices, batch_outputs, strict=True):
                outputs[i] = output
    n_prompts = len(prompts)
    grid = [outputs[s * n_prompts : (s + 1) * n_prompts] for s in range(len(settings))]
    return GenerationResult(
        settings=list(settings),
        generated=[[output.generated for output in line] for line in grid],
        target_activation=torch.tensor([[output.target_activation for output in line] for line in grid]),
        other_feature_change=torch.tensor([[output.other_feature_change for output in line] for line in grid]),
        activations=[[output.acts_SPD for output in line] for line in grid] if record_activations else None,
        prompt_iterations=iterations,
    )
