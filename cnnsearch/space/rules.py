"""Owns what a space file may say, declared as data: every key of every table, its type, its
check and its meaning (`space show` prints the meanings; `parse` validates against them).

Pure data and small checks: imports only the spec's lists of valid names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cnnsearch.spec import (
    ACTIVATIONS,
    HEAD_POOLINGS,
    LAYER_KINDS,
    OPTIMIZERS,
    PADDINGS,
    POOL_KINDS,
    SCHEDULES,
)


@dataclass(frozen=True)
class KeyRule:
    """What one key accepts: its value type, a check on each value, and its meaning."""

    value_type: type  # int, float, bool or str
    meaning: str
    default: Any
    check: Callable[[Any], str | None] = lambda value: None  # returns a problem, or None
    allowed: tuple[Any, ...] = ()  # for strings: the valid values


def _at_least(minimum: float) -> Callable[[Any], str | None]:
    return lambda value: None if value >= minimum else f"{value} must be >= {minimum}"


def _odd(value: int) -> str | None:
    if value < 1:
        return f"{value} must be >= 1"
    return None if value % 2 == 1 else f"{value} is even; use odd sizes"


def _fraction(value: float) -> str | None:
    return None if 0.0 <= value < 1.0 else f"{value} must be in [0, 1)"


def _positions(value: int) -> str | None:
    if value >= 1:
        return None
    return f"{value} positions: a sequence needs at least 1 layer position, e.g. layers = {{ low = 2, high = 6 }}"


def _positive(value: float) -> str | None:
    return None if value > 0 else f"{value} must be > 0"


# Keys that describe conv/pool layers: written in [network] they take one value for the
# whole network, written in [stage] they are sampled once per stage.
LAYER_KEYS: dict[str, KeyRule] = {
    "filters": KeyRule(
        int, "output channels of stage 1 (grown by width_multiplier) or of each stage", 32, _at_least(1)
    ),
    "kernel_size": KeyRule(int, "conv kernel side in pixels (odd)", 3, _odd),
    "stride": KeyRule(int, "stride of a stage's first conv", 1, _at_least(1)),
    "padding": KeyRule(str, "same keeps the size at stride 1, valid shrinks it by kernel-1", "same", allowed=PADDINGS),
    "activation": KeyRule(str, "non-linearity after each conv", "relu", allowed=ACTIVATIONS),
    "batch_norm": KeyRule(bool, "batch norm after each conv", True),
    "pool_type": KeyRule(str, "pooling layer type", "max", allowed=POOL_KINDS),
    "pool_window": KeyRule(int, "pooling window side in pixels", 2, _at_least(1)),
    "pool_stride": KeyRule(int, "pooling stride in pixels", 2, _at_least(1)),
}


TABLES: dict[str, dict[str, KeyRule]] = {
    "network": {
        "stages": KeyRule(int, "number of conv stages", 2, _at_least(1)),
        "width_multiplier": KeyRule(float, "filters grow by this factor from one stage to the next", 2.0, _positive),
        **LAYER_KEYS,
    },
    "stage": {
        "convs": KeyRule(int, "conv layers in the stage", 1, _at_least(1)),
        "pool": KeyRule(bool, "a pooling layer ends the stage", True),
        **LAYER_KEYS,
    },
    "head": {
        "pooling": KeyRule(str, "flatten the feature map, or global average pooling", "gap", allowed=HEAD_POOLINGS),
        "dense_layers": KeyRule(int, "hidden dense layers before the classifier", 0, _at_least(0)),
        "dense_units": KeyRule(int, "width of each hidden dense layer", 128, _at_least(1)),
        "dropout": KeyRule(float, "drop probability before each dense layer", 0.0, _fraction),
        "activation": KeyRule(str, "non-linearity of hidden dense layers", "relu", allowed=ACTIVATIONS),
    },
    "train": {
        "optimizer": KeyRule(str, "optimiser", "adamw", allowed=OPTIMIZERS),
        "lr": KeyRule(float, "peak learning rate", 1e-3, _positive),
        "weight_decay": KeyRule(float, "weight decay", 5e-4, _at_least(0.0)),
        "momentum": KeyRule(float, "sgd momentum (nesterov); used only with sgd", 0.9, _fraction),
        "batch_size": KeyRule(int, "images per optimiser step", 128, _at_least(1)),
        "epochs": KeyRule(int, "epochs budget per trial (--epochs overrides)", 10, _at_least(1)),
        "label_smoothing": KeyRule(float, "label smoothing of the cross-entropy", 0.0, _fraction),
        "schedule": KeyRule(str, "learning-rate schedule", "onecycle", allowed=SCHEDULES),
        "warmup": KeyRule(float, "share of steps spent warming up", 0.2, _fraction),
    },
    "augment": {
        "translate": KeyRule(int, "max random shift in pixels, zero padded", 0, _at_least(0)),
        "flip": KeyRule(bool, "random horizontal flip (wrong for digits)", False),
        "cutout": KeyRule(int, "side of a random zeroed square in pixels (0 = off)", 0, _at_least(0)),
    },
}


CONSTRAINT_KEYS = {
    "max_params": "most trainable parameters a candidate may have",
    "max_flops": "most FLOPs for one image",
}


TOP_LEVEL = (*TABLES, "constraints")


# The sequence form: [sequence] holds how many layer positions there are and the kinds each may
# be; each kind's table holds its settings, sampled anew at every position of that kind (the
# Optuna name is layer<i>.<kind>.<key>, e.g. layer3.conv.filters). Defaults are the spec's.
_FILTERS = KeyRule(int, "output channels", 32, _at_least(1))
_KERNEL = KeyRule(int, "kernel side in pixels (odd)", 3, _odd)
_ACTIVATION = KeyRule(str, "non-linearity after each conv", "relu", allowed=ACTIVATIONS)
_BATCH_NORM = KeyRule(bool, "batch norm after each conv", True)
_PADDING = LAYER_KEYS["padding"]
KIND_TABLES: dict[str, dict[str, KeyRule]] = {
    "conv": {
        "filters": _FILTERS,
        "kernel_size": _KERNEL,
        "stride": KeyRule(int, "stride of the conv", 1, _at_least(1)),
        "padding": _PADDING,
        "activation": _ACTIVATION,
        "batch_norm": _BATCH_NORM,
    },
    "pool": {
        "pool_type": KeyRule(str, "pooling layer type", "max", allowed=POOL_KINDS),
        "window": KeyRule(int, "pooling window side in pixels", 2, _at_least(1)),
        "stride": KeyRule(int, "pooling stride in pixels", 2, _at_least(1)),
    },
    "residual": {
        "filters": KeyRule(int, "output channels of both convs", 32, _at_least(1)),
        "kernel_size": KeyRule(int, "kernel side of both convs in pixels (odd)", 3, _odd),
        "stride": KeyRule(int, "stride of the first conv (1x1 projection when not 1)", 1, _at_least(1)),
        "activation": _ACTIVATION,
        "batch_norm": _BATCH_NORM,
    },
    "separable": {
        "filters": KeyRule(int, "output channels of the pointwise conv", 32, _at_least(1)),
        "kernel_size": KeyRule(int, "depthwise kernel side in pixels (odd)", 3, _odd),
        "stride": KeyRule(int, "stride of the depthwise conv", 1, _at_least(1)),
        "padding": _PADDING,
        "activation": _ACTIVATION,
        "batch_norm": _BATCH_NORM,
    },
}

SEQUENCE_TABLES: dict[str, dict[str, KeyRule]] = {
    "sequence": {
        "layers": KeyRule(int, "layer positions, each of its own kind", 4, _positions),
        "kinds": KeyRule(str, "the kind of each position", "conv", allowed=LAYER_KINDS),
    },
    **KIND_TABLES,
    "head": {
        **TABLES["head"],
        "dense_units": KeyRule(int, "width of hidden dense layer i (its own)", 128, _at_least(1)),
    },
    "train": TABLES["train"],
    "augment": TABLES["augment"],
}
SEQUENCE_TOP_LEVEL = (*SEQUENCE_TABLES, "constraints")
