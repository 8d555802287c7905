"""What every rule script does first (log to the rule's log file, use the rule's threads, seed), and
where its models are."""

from __future__ import annotations

import logging
import random
import sys
from types import TracebackType
from typing import TYPE_CHECKING, cast

import numpy as np
import torch

# The dtypes a config or checkpoint names, for models and crosscoders alike.
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import PreTrainedModel


def start_job(log_path: str, *, threads: int, seed: int) -> logging.Logger:
    logging.basicConfig(
        filename=log_path,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        force=True,
    )
    log = logging.getLogger("crosscoder_interventions")

    # A job that fails leaves its traceback in its own log file too, not only in Snakemake's stderr,
    # which a cluster job's log is often the only place to look for.
    def log_uncaught(kind: type[BaseException], value: BaseException, traceback: TracebackType | None) -> None:
        log.critical("the job failed", exc_info=(kind, value, traceback))
        sys.__excepthook__(kind, value, traceback)

    sys.excepthook = log_uncaught
    torch.set_num_threads(max(1, threads))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return log


def device_of(model: torch.nn.Module) -> torch.device:
    """Where a model's (or bridge's) weights are: the device its inputs must be built on."""
    return next(model.parameters()).device


def hf_model_of(bridge: TransformerBridge) -> PreTrainedModel:
    """The Hugging Face model under a bridge, whose weights compatibility mode leaves as they were."""
    # TransformerBridge stores original_model in its __dict__ unannotated, so type checkers see
    # nn.Module.__getattr__'s Tensor | Module; boot_transformers sets it to the PreTrainedModel it wraps.
    return cast("PreTrainedModel", bridge.original_model)
