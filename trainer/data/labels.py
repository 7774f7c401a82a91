"""Label CSVs: the ``Path, Age`` table that the scoring commands read (``read_age_csv``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from core.errors import ConfigError


def read_age_csv(csv_path: Path, images: Path, columns: Sequence[str] = ()) -> pd.DataFrame:
    """``Path, Age`` rows of ``csv_path`` (plus ``columns``) with paths joined to ``images``; ConfigError names a
    missing folder, a bad file or a bad column."""
    if not images.is_dir():
        raise ConfigError(f"--images {images}: folder not found")
    try:
        table = pd.read_csv(csv_path, dtype={"ID": str, "Path": str})
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--csv {csv_path}: cannot read CSV ({exc})") from None
    for column in ("Path", "Age", *columns):
        if column not in table.columns:
            raise ConfigError(f"--csv {csv_path}: column {column!r} missing")
    ages = pd.to_numeric(table["Age"], errors="coerce")
    if ages.isna().any():
        raise ConfigError(f"--csv {csv_path}: column 'Age': not a number on line {int(ages.isna().argmax()) + 2}")
    extra = {column: table[column].to_numpy() for column in columns}
    return pd.DataFrame({"Path": [str(images / p) for p in table["Path"]], "Age": ages.to_numpy()} | extra)
