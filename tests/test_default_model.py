"""The shipped model: agrees with the predict config, loads in a fresh process, ages a real face plausibly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.artifact import read_metadata
from service.settings import DEFAULT_PREDICT_CONFIG, check_agreement, load_predict_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = load_predict_config(DEFAULT_PREDICT_CONFIG)
MODEL = CONFIG.resolve_model_path(DEFAULT_PREDICT_CONFIG)

pytestmark = pytest.mark.skipif(not MODEL.is_file(), reason=f"no model committed at {MODEL}")


def test_predict_config_and_model_card_describe_the_shipped_file() -> None:
    meta = read_metadata(MODEL)
    check_agreement(CONFIG, DEFAULT_PREDICT_CONFIG, meta, MODEL)
    assert MODEL.stat().st_size <= 60 * 2**20, "the issue allows at most 60 MB under models/"
    card = (ROOT / "models" / "README.md").read_text()
    assert f"{meta['test_metrics']['mae']:.2f}" in card, "the card quotes the file's own test MAE"
    assert f"padding {meta['chip_padding']}" in card


def test_the_shipped_model_loads_and_answers_in_a_fresh_process(fixtures_dir: Path) -> None:
    code = (
        "import json\n"
        "from core.artifact import load_model, read_metadata\n"
        "from core.coral import labels_from_probas, probas_from_logits\n"
        "from core.face import FaceAligner\n"
        "from core.image import read_image\n"
        f"meta = read_metadata({str(MODEL)!r})\n"
        f"faces = FaceAligner.from_metadata(meta).align(read_image({str(fixtures_dir / 'astronaut.png')!r}))\n"
        "probas = probas_from_logits(load_model("
        f"{str(MODEL)!r}).predict(faces[0].chip[None].astype('float32'), verbose=0))\n"
        "age = int(meta['start_label'] + labels_from_probas(probas)[0])\n"
        "monotone = bool((probas[0][1:] <= probas[0][:-1]).all())\n"
        "print(json.dumps({'faces': len(faces), 'age': age, 'monotone': monotone}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["faces"] == 1
    assert result["monotone"]
    assert 18 <= result["age"] <= 60, result  # an adult (Eileen Collins in her thirties)


def test_the_shipped_model_beats_the_median_guess_on_held_out_photos(utkface_dir: Path, tmp_path: Path) -> None:
    """Raw held-out UTKFace photos through detection, alignment and the model: a model that does not work (wrong
    alignment, wrong pixel scaling, untrained) scores about the median guess."""
    import numpy as np
    import pandas as pd

    from trainer.evaluation.evaluate import evaluate

    rows = pd.read_csv(ROOT / "models" / "holdout.csv").sample(n=120, random_state=0)
    rows.to_csv(tmp_path / "some.csv", index=False)
    result = evaluate(MODEL, tmp_path / "some.csv", utkface_dir, aligned=False)
    median_guess = float(np.abs(rows["Age"] - rows["Age"].median()).mean())
    assert result["n"] >= 115
    assert result["mae"] < 0.6 * median_guess, (result, median_guess)
