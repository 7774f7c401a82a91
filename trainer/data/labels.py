"""Label CSVs: one reader (``read_label_csv``) for the training table (``trainer.data.dataset.load_table``) and the
``Path, Age`` table the scoring commands read (``read_age_csv``); true ages as a model's ranks (``clipped_ranks``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import ConfigError


def read_label_csv(csv_path: Path, where: str, columns: Sequence[str]) -> tuple[pd.DataFrame, pd.Series]:
    """``(table, ages)``: the CSV with every cell read as written (``ID`` and ``Path`` as text, an empty cell as
    ``""``, never NaN), and its ``Age`` column as numbers.

    ``where`` starts every error message (``"csv_path FILE"``, ``"--csv FILE"``). Raises ``ConfigError`` for a file
    that cannot be read, the columns of ``columns`` it lacks (all of them), or an age that is not a number (naming
    its line).
    """
    try:
        table = pd.read_csv(csv_path, dtype={"ID": str, "Path": str}, keep_default_na=False)
    except (OSError, ValueError) as exc:  # pandas' ParserError and UnicodeDecodeError are ValueErrors
        raise ConfigError(f"{where}: cannot read CSV ({exc})") from None
    missing = [repr(column) for column in columns if column not in table.columns]
    if missing:
        has = ", ".join(map(str, table.columns))
        raise ConfigError(
            f"{where}: column(s) {', '.join(missing)} missing; expected at least {', '.join(columns)} (has {has})"
        )
    ages = pd.to_numeric(table["Age"], errors="coerce")
    if ages.isna().any():
        row = int(np.flatnonzero(ages.isna().to_numpy())[0]) + 2  # 1-based, after the header line
        raise ConfigError(f"{where}: column 'Age': not a number on line {row}")
    return table, ages


def clipped_ranks(ages: Sequence[float] | np.ndarray, start_label: int, num_classes: int) -> tuple[np.ndarray, int]:
    """``(ranks, outside)``: ages in years ``(n,)`` rounded to whole years as ranks ``age - start_label`` ``(n,)``
    int64, those outside ``0 .. num_classes - 1`` moved onto its ends (a model cannot say more), and how many were."""
    ranks = np.rint(np.asarray(ages, dtype=np.float64)).astype(np.int64) - int(start_label)
    outside = int(((ranks < 0) | (ranks > num_classes - 1)).sum())
    return np.clip(ranks, 0, num_classes - 1), outside


def read_age_csv(csv_path: Path, images: Path, columns: Sequence[str] = ()) -> pd.DataFrame:
    """``Path, Age`` rows of ``csv_path`` (plus ``columns``) with paths joined to ``images``; ConfigError names a
    missing folder, a bad file or a bad column."""
    if not images.is_dir():
        raise ConfigError(f"--images {images}: folder not found")
    table, ages = read_label_csv(csv_path, f"--csv {csv_path}", ("Path", "Age", *columns))
    extra = {column: table[column].to_numpy() for column in columns}
    return pd.DataFrame({"Path": [str(images / p) for p in table["Path"]], "Age": ages.to_numpy()} | extra)
