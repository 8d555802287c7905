"""The features a config names for each role (`features: {ablate: [...], steer: [...]}` or "auto"),
checked against the crosscoder's width: at start-up and again where discovery selects them. Light, so
that start-up checks need neither torch nor the discovery code."""

from __future__ import annotations

from crosscoder_interventions.errors import ConfigError


def check_feature_ids(features_config: str | dict, n_features: int) -> None:
    if isinstance(features_config, str):  # "auto", the schema's only string
        return
    for role in ("ablate", "steer"):
        for feature in features_config[role]:
            if not 0 <= feature < n_features:
                raise ConfigError(
                    f"features.{role}: feature {feature} is out of range for a crosscoder with {n_features} features; use 0..{n_features - 1}."
                )
