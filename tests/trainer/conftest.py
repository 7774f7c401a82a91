"""Fixtures for the trainer tests: one small untrained model file that scoring commands can read."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.artifact import save_model
from trainer.model.build import build_model

IMG_SIZE = 32
START = 10


@pytest.fixture(scope="session")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 32 px model for ages 10..20 with its metadata (evaluation does not care how good it is)."""
    model = build_model("resnet", 18, IMG_SIZE, 11, width=8)
    meta = {
        "start_label": START,
        "end_label": START + 10,
        "num_classes": 11,
        "img_size": IMG_SIZE,
        "chip_padding": 0.4,
        "threshold": 0.5,
        "arch_type": "resnet",
        "arch_subtype": 18,
    }
    return save_model(model, tmp_path_factory.mktemp("model") / "m.h5", meta)
