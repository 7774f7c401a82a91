"""The networks: ``build`` (``build_model``: backbone + CORAL head), ``backbones/`` (dlib's face ResNet and its
weights reader), ``pretrained`` (which starting weights a config names), ``optimiser`` (AdamW with a scaled
backbone rate, freezing), ``ensemble`` (several models as one).

``build_model`` is re-exported here (``trainer.model.build_model`` is public API) without importing Keras until it
is first used, so ``trainer.model.pretrained`` stays cheap for ``age-train``'s config checks.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_model"]


def __getattr__(name: str) -> Any:
    if name == "build_model":
        from trainer.model.build import build_model

        return build_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
