"""A learnable synthetic dataset for trainer tests: random chips whose brightness grows with age."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def synthetic_faces(folder: Path, n: int = 40, size: int = 32, seed: int = 1) -> Path:
    """Write ``n`` PNG chips of ``size`` pixels under ``folder/images`` and ``folder/labels.csv``.

    Ages are uniform in 10..59 and two rows share each ``ID``; returns the CSV's path.
    """
    (folder / "images").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        age = int(rng.integers(10, 60))
        pixels = np.clip(rng.normal(age * 4, 20, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / "images" / f"{i}.png")
        rows.append({"ID": f"id{i // 2}", "Path": f"images/{i}.png", "Age": age})
    pd.DataFrame(rows).to_csv(folder / "labels.csv", index=False)
    return folder / "labels.csv"
