"""Loading language models as TransformerBridges in compatibility mode.

Both worlds load through here: a Hugging Face model directory or hub id, optionally with a LoRA
adapter merged into it through peft. Compatibility mode folds layer norms and centres weights as
HookedTransformer did, which is what the crosscoders were trained on.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from transformer_lens.model_bridge import TransformerBridge
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from crosscoder_interventions.errors import ConfigError

HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HUB_TIMEOUT_S = 10.0
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def hookpoint_names(n_layers: int) -> list[str]:
    """The P = n_layers + 1 residual hookpoints a many-layer crosscoder reads (DESIGN.md section 1)."""
    return ["blocks.0.hook_resid_pre"] + [f"blocks.{layer}.hook_resid_post" for layer in range(n_layers)]


def resolve_hookpoints(setting: str | list[str], n_layers: int) -> list[str]:
    """The config's `hookpoints`: `auto` for the standard residual hookpoints, or an explicit list."""
    return hookpoint_names(n_layers) if setting == "auto" else list(setting)


def resolve_device(device: str) -> str:
    """`auto` means CUDA when present; anything else is passed through after a sanity check."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{device}' was requested but no CUDA device is visible; set device: auto or cpu.")
    return device


def device_of(model: torch.nn.Module) -> torch.device:
    """Where a model's (or bridge's) weights are: the device its inputs must be built on."""
    return next(model.parameters()).device


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
    download = f"download it where there is network (hf download {'--repo-type dataset ' if repo_type == 'dataset' else ''}{source} --local-dir <dir>) and point the config at <dir>"
    if hub_offline():
        raise ConfigError(f"{what} '{source}' is a hub id, HF_HUB_OFFLINE=1 and it is not in the local cache; {download}, or run with network access.")
    from huggingface_hub import HfApi

    try:
        HfApi().repo_info(source, repo_type=repo_type, timeout=HUB_TIMEOUT_S)
    except Exception as error:  # no network, no such repository, no access: all mean it cannot be fetched
        raise ConfigError(f"{what} '{source}' is not in the local cache and cannot be fetched from the hub ({type(error).__name__}); {download}.") from error


def load_hf_model(source: str, lora_adapter: str | None, dtype: torch.dtype) -> PreTrainedModel:
    """A causal LM from a directory or hub id, with a LoRA adapter merged into its weights."""
    check_model_source(source, "model")
    check_hub_source(source, "model")
    # Eager attention: for GPT-Neo the intervention engine replaces GPTNeoSelfAttention._attn, which the
    # sdpa and flash attention classes (chosen when the model is built, not later) never call. Other
    # architectures' attention is the bridge's own, or switched to the engine's per call (engine.attention).
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, attn_implementation="eager")
    if lora_adapter is not None:
        from peft import PeftModel

        check_model_source(lora_adapter, "LoRA adapter")
        check_hub_source(lora_adapter, "LoRA adapter")
        model = PeftModel.from_pretrained(model, lora_adapter).merge_and_unload()
    return model.eval()


def load_tokenizer(source: str) -> PreTrainedTokenizerBase:
    """The model's tokenizer, padding with end-of-text when it has no pad token (GPT-Neo's has none),
    as HookedTransformer does: pads are masked or never scored, so their id only has to exist."""
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    source: str,
    *,
    lora_adapter: str | None = None,
    tokenizer_source: str | None = None,
    device: str = "cpu",
    dtype: str = "float32",
) -> TransformerBridge:
    """A TransformerBridge in compatibility mode over a Hugging Face model (and merged adapter), every
    weight on `device` in `dtype`."""
    torch_dtype, torch_device = DTYPES[dtype], resolve_device(device)
    # boot_transformers takes a given hf_model as it is: it records `device` but moves nothing.
    hf_model = load_hf_model(source, lora_adapter, torch_dtype).to(torch_device)
    tokenizer = load_tokenizer(tokenizer_source or source)
    bridge = TransformerBridge.boot_transformers(
        source, hf_model=hf_model, tokenizer=tokenizer, device=torch_device, dtype=torch_dtype
    )
    bridge.enable_compatibility_mode(disable_warnings=True)
    return bridge.eval()
