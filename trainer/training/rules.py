"""The rules between keys of a training config: each a small function of the config that returns what is wrong
(``key: why``) or ``None``. ``broken_rules`` runs them all, so a config with several mistakes hears of each."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trainer.model.architectures import ARCHITECTURES, IMAGENET_BACKBONES, MIN_FACE_RESNET_SIZE


def _arch_subtype(c: Any) -> str | None:
    if c.arch_subtype in ARCHITECTURES[c.arch_type]:
        return None
    return f"arch_subtype: {c.arch_type} takes {', '.join(map(str, ARCHITECTURES[c.arch_type]))}, not {c.arch_subtype}"


def _face_resnet_size(c: Any) -> str | None:
    if c.arch_type == "face_resnet" and c.img_size < MIN_FACE_RESNET_SIZE:
        return f"img_size: face_resnet needs at least {MIN_FACE_RESNET_SIZE} pixels (dlib's weights were learnt at 150)"
    return None


def _pretrained(c: Any) -> str | None:
    if c.pretrained == "dlib" and c.arch_type != "face_resnet":
        return "pretrained: 'dlib' weights exist for arch_type face_resnet only"
    if c.pretrained == "imagenet" and (c.arch_type, c.arch_subtype) not in IMAGENET_BACKBONES:
        return f"pretrained: keras.applications has no ImageNet weights for {c.arch_type}{c.arch_subtype}"
    if c.pretrained == "":
        return "pretrained: empty; use null for training from scratch"
    return None


def _freeze(c: Any) -> str | None:
    if c.freeze_backbone_epochs and c.pretrained is None:
        return "freeze_backbone_epochs: freezing a backbone that is not pretrained only slows training"
    if c.freeze_backbone_epochs >= c.num_epochs and c.freeze_backbone_epochs > 0:
        return "freeze_backbone_epochs: must be smaller than num_epochs"
    return None


def _downscale(c: Any) -> str | None:
    if c.augment_downscale > 0 and c.augment_downscale_min >= c.img_size:
        return "augment_downscale_min: must be smaller than img_size"
    return None


def _fractions(c: Any) -> str | None:
    if c.val_fraction + c.test_fraction >= 1.0:
        return "test_fraction: val_fraction + test_fraction must leave rows for training"
    return None


def _labels(c: Any) -> str | None:
    if c.start_label is not None and c.end_label is not None and c.end_label <= c.start_label:
        return "end_label: must be greater than start_label"
    return None


def _warmup(c: Any) -> str | None:
    if c.warmup_epochs >= c.num_epochs and c.warmup_epochs > 0:
        return "warmup_epochs: must be smaller than num_epochs"
    return None


def _run_dir(c: Any) -> str | None:
    try:
        str(c.run_dir).format(model_prefix="", arch_type="", arch_subtype="", timestamp="")
    except (KeyError, IndexError, ValueError) as exc:
        return f"run_dir: unknown or malformed field {exc}"
    return None


def _resume(c: Any) -> str | None:
    if c.resume and not c.checkpoint:
        return "resume: needs checkpoint: true (the last-epoch checkpoint is what resumes)"
    return None


RULES: tuple[Callable[[Any], str | None], ...] = (
    _arch_subtype,
    _face_resnet_size,
    _pretrained,
    _freeze,
    _downscale,
    _fractions,
    _labels,
    _warmup,
    _run_dir,
    _resume,
)


def broken_rules(config: Any) -> list[str]:
    """Every rule ``config`` (a ``TrainConfig``) breaks, each as ``key: what is wrong``.

    A rule that reads a key the config lacks is skipped: ``load_config`` checks the rules on a config whose keys
    that failed on their own were left out, so that it can report them together with the rest.
    """
    problems = []
    for rule in RULES:
        try:
            problem = rule(config)
        except AttributeError:
            continue
        if problem:
            problems.append(problem)
    return problems
