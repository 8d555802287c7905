"""Residual hookpoint names, as TransformerLens spells them; light enough for the start-up checks."""

from __future__ import annotations

import re

HOOKPOINT_PATTERN = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|mid|post)$")


def hookpoint_names(n_layers: int) -> list[str]:
    """The P = n_layers + 1 residual hookpoints a many-layer crosscoder reads (docs/design.md, section 1)."""
    return ["blocks.0.hook_resid_pre"] + [f"blocks.{layer}.hook_resid_post" for layer in range(n_layers)]


def resolve_hookpoints(setting: str | list[str], n_layers: int) -> list[str]:
    """The config's `hookpoints`: `auto` for the standard residual hookpoints, or an explicit list."""
    return hookpoint_names(n_layers) if setting == "auto" else list(setting)
