"""What every rule script does first (log to the rule's log file, use the rule's threads, seed), how
it marks the end of its start-up, and where its models are.

A job's time has two parts, logged as its last line (`JOB_TIMING`): start-up, from the process's start
through imports, device set-up and loading its models, dictionary and data, up to `work_begins()`;
and work, the rest. `crosscoder_interventions.timings` collects them into results/timings.csv.
"""

from __future__ import annotations

import atexit
import logging
import random
import sys
import time
from types import TracebackType
from typing import TYPE_CHECKING, cast

import numpy as np
import psutil
import torch

# The dtypes a config or checkpoint names, for models and crosscoders alike.
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}

# The last line of every job's log: its start-up and work in seconds, and the most GPU memory its tensors
# held (MiB; nan where it used no GPU).
JOB_TIMING = "job timing: startup_s={startup_s:.3f} work_s={work_s:.3f} peak_gpu_mib={peak_gpu_mib:.1f}"
_work_started: list[float] = []

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
    atexit.register(_log_timing, log, psutil.Process().create_time())
    return log


def work_begins() -> None:
    """Ends the job's start-up: its models, dictionary and data are loaded, what follows is its work."""
    if not _work_started:
        _work_started.append(time.time())


def _log_timing(log: logging.Logger, process_started: float) -> None:
    now = time.time()
    work_started = _work_started[0] if _work_started else now
    peak_gpu_mib = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_initialized() else float("nan")
    log.info(JOB_TIMING.format(startup_s=work_started - process_started, work_s=now - work_started, peak_gpu_mib=peak_gpu_mib))


def device_of(model: torch.nn.Module) -> torch.device:
    """Where a model's (or bridge's) weights are: the device its inputs must be built on."""
    return next(model.parameters()).device


def hf_model_of(bridge: TransformerBridge) -> PreTrainedModel:
    """The Hugging Face model under a bridge, whose weights compatibility mode leaves as they were."""
    # TransformerBridge stores original_model in its __dict__ unannotated, so type checkers see
    # nn.Module.__getattr__'s Tensor | Module; boot_transformers sets it to the PreTrainedModel it wraps.
    return cast("PreTrainedModel", bridge.original_model)
