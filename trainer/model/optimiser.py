"""The optimiser: Adam or AdamW on a cosine schedule, with a smaller learning rate for a pretrained backbone.

Fine-tuning keeps pretrained features when the backbone moves slower than the new head (Howard & Ruder 2018,
discriminative fine-tuning; Kumar et al. 2022, "Fine-tuning can distort pretrained features", for the head-first
warm start). :class:`BackboneScaledAdamW` multiplies the learning rate of every variable outside the CORAL head by
``backbone_multiplier`` (``backbone_learning_rate / learning_rate``), and :class:`BackboneFreeze` holds that
multiplier at 0 for the first ``freeze_backbone_epochs`` epochs (head only). dlib's face-recognition network needs
this: it has no batch normalisation left, and at 2e-4 a fine-tune collapsed to a constant output within an epoch.
Weight decay applies to the head only: decaying pretrained weights towards zero would erase what they learnt.
"""

from __future__ import annotations

from typing import Any

import keras

from trainer.training.config import TrainConfig

__all__ = ["BackboneFreeze", "BackboneScaledAdamW", "freeze_callbacks", "make_optimizer"]

HEAD_PREFIX = "coral"


class BackboneScaledAdamW(keras.optimizers.AdamW):
    """AdamW whose backbone variables (all but the ``coral`` head's) step ``backbone_multiplier`` times as far."""

    def __init__(self, backbone_multiplier: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.initial_multiplier = float(backbone_multiplier)
        self._head_keys: set[Any] = set()

    def build(self, var_list: list[Any]) -> None:
        backbone = [v for v in var_list if not v.path.startswith(HEAD_PREFIX)]
        self.exclude_from_weight_decay(var_list=backbone)
        super().build(var_list)
        self._head_keys = {self._var_key(v) for v in var_list if v.path.startswith(HEAD_PREFIX)}
        self.backbone_multiplier = self.add_variable(
            (), initializer=keras.initializers.Constant(self.initial_multiplier), name="backbone_multiplier"
        )

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        if self._var_key(variable) not in self._head_keys:
            learning_rate = learning_rate * keras.ops.cast(self.backbone_multiplier, learning_rate.dtype)
        super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict[str, Any]:
        return super().get_config() | {"backbone_multiplier": self.initial_multiplier}


class BackboneFreeze(keras.callbacks.Callback):
    """Backbone learning-rate multiplier 0 for epochs ``< frozen_epochs`` (0-based), ``multiplier`` after."""

    def __init__(self, frozen_epochs: int, multiplier: float) -> None:
        super().__init__()
        self.frozen_epochs = frozen_epochs
        self.multiplier = multiplier

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        optimizer = self.model.optimizer
        if not getattr(optimizer, "built", False):
            optimizer.build(self.model.trainable_variables)
        optimizer.backbone_multiplier.assign(0.0 if epoch < self.frozen_epochs else self.multiplier)


def freeze_callbacks(config: TrainConfig) -> list[keras.callbacks.Callback]:
    """The :class:`BackboneFreeze` callback when the config fine-tunes a backbone at its own rate, else none."""
    if config.backbone_learning_rate is None and not config.freeze_backbone_epochs:
        return []
    return [BackboneFreeze(config.freeze_backbone_epochs, backbone_multiplier(config))]


def backbone_multiplier(config: TrainConfig) -> float:
    """``backbone_learning_rate / learning_rate`` (1 when no backbone rate is set)."""
    if config.backbone_learning_rate is None:
        return 1.0
    return config.backbone_learning_rate / config.learning_rate


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The config's optimiser: the head at ``learning_rate`` (cosine decay after ``warmup_epochs`` when
    ``lr_schedule`` is ``cosine``), the backbone at ``backbone_learning_rate`` on the same schedule."""
    rate: float | keras.optimizers.schedules.LearningRateSchedule = config.learning_rate
    if config.lr_schedule == "cosine":
        warmup = steps_per_epoch * config.warmup_epochs
        rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=config.learning_rate if warmup == 0 else config.learning_rate / 100,
            decay_steps=steps_per_epoch * (config.num_epochs - config.warmup_epochs),
            alpha=0.01,
            warmup_target=config.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    if config.backbone_learning_rate is not None or config.freeze_backbone_epochs:
        return BackboneScaledAdamW(
            backbone_multiplier=backbone_multiplier(config), learning_rate=rate, weight_decay=config.weight_decay
        )
    if config.weight_decay > 0:
        return keras.optimizers.AdamW(learning_rate=rate, weight_decay=config.weight_decay)
    return keras.optimizers.Adam(learning_rate=rate)
