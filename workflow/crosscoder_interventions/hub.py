"""Where models and datasets come from: a local path or a Hugging Face hub id, checked at start-up
without loading anything (and, in a dry run, without the network)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from crosscoder_interventions.errors import ConfigError

HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HUB_TIMEOUT_S = 10.0


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


def is_hub_id(source: str) -> bool:
    return not Path(source).exists() and HUB_ID_PATTERN.match(source) is not None


def in_hub_cache(repo_id: str, repo_type: str = "model") -> bool:
    from huggingface_hub import scan_cache_dir

    try:
        return any(repo.repo_id == repo_id and repo.repo_type == repo_type for repo in scan_cache_dir().repos)
    except Exception:  # no cache directory at all: nothing is cached
        return False


def check_model_source(source: str, what: str) -> None:
    """One-line error for a model or adapter path that cannot exist; hub ids pass (see check_hub_source)."""
    if Path(source).is_dir():
        return
    if Path(source).exists():
        raise ConfigError(f"{what} '{source}' is a file, not a Hugging Face model directory; point it at the directory.")
    if not is_hub_id(source):
        raise ConfigError(f"{what} '{source}' does not exist; build it first or fix the path in the config.")


def check_hub_source(source: str, what: str, *, repo_type: str = "model") -> None:
    """One-line error for a hub id that is not in the local cache and cannot be fetched (HF_HUB_OFFLINE=1,
    or the hub does not answer), so that a run without the network stops in seconds, not in a job."""
    if Path(source).exists() or in_hub_cache(source, repo_type):
        return
    download = (
        f"download it where there is network (hf download {'--repo-type dataset ' if repo_type == 'dataset' else ''}{source} --local-dir <dir>) "
        "and point the config at <dir>"
    )
    if hub_offline():
        raise ConfigError(
            f"{what} '{source}' is a hub id, HF_HUB_OFFLINE=1 and it is not in the local cache; {download}, or run with network access."
        )
    from huggingface_hub import HfApi

    try:
        HfApi().repo_info(source, repo_type=repo_type, timeout=HUB_TIMEOUT_S)
    except Exception as error:  # no network, no such repository, no access: all mean it cannot be fetched
        raise ConfigError(
            f"{what} '{source}' is not in the local cache and cannot be fetched from the hub ({type(error).__name__}); {download}."
        ) from error


def model_config(source: str, what: str = "model") -> dict[str, Any]:
    """The config.json of a model directory or hub id (from the local cache when offline): no transformers import."""
    if is_hub_id(source):
        from huggingface_hub import hf_hub_download

        check_hub_source(source, what)
        source = str(Path(hf_hub_download(source, "config.json")).parent)
    config_file = Path(source) / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"{what} '{source}' has no config.json; give a Hugging Face model directory or hub id.")
    return json.loads(config_file.read_text())
