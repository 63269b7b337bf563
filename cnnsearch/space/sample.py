"""Owns drawing a candidate from a space and its inverse, side by side so they cannot drift:
`sample_architecture` asks an Optuna trial (or anything with its `suggest_*` methods) for
exactly the parameters a candidate has; `params_for` finds the parameter values that sample to
a given architecture (warm start), by replaying the same questions.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from cnnsearch.spec import (
    Architecture,
    AugmentSettings,
    ConvLayer,
    Head,
    PoolLayer,
    TrainSettings,
)

if TYPE_CHECKING:
    from cnnsearch.space.parse import SearchSpace


class SuggestingTrial(Protocol):
    def suggest_categorical(self, name: str, choices: Any) -> Any: ...
    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...
    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...


def _layer_value(space: SearchSpace, trial: SuggestingTrial, stage: int, key: str) -> Any:
    """A layer key from [stage] (sampled per stage) or [network] (sampled once)."""
    if key in space.dimensions["stage"]:
        return space.dimensions["stage"][key].sample(trial, f"stage{stage}.{key}")
    return space.dimension("network", key).sample(trial, f"network.{key}")


def sample_architecture(space: SearchSpace, trial: SuggestingTrial, *, epochs: int | None = None) -> Architecture:
    """Draw one candidate, asking only for the parameters that exist in it: the layers by the
    space's form (stages, or a sequence of positions), then the head, training and augmentation."""
    from cnnsearch.space.sequence import dense_name, sample_sequence_layers

    layers = sample_sequence_layers(space, trial) if space.form == "sequence" else _sample_stages(space, trial)
    dense_layers = space.dimension("head", "dense_layers").sample(trial, "head.dense_layers")
    units = space.dimension("head", "dense_units")
    if space.form == "sequence":  # each hidden dense layer its own width
        dense = tuple(units.sample(trial, dense_name(index)) for index in range(1, dense_layers + 1))
    else:
        dense = (units.sample(trial, "head.dense_units"),) * dense_layers if dense_layers else ()
    head = Head(
        pooling=space.dimension("head", "pooling").sample(trial, "head.pooling"),
        dense=dense,
        dropout=float(space.dimension("head", "dropout").sample(trial, "head.dropout")),
        activation=space.dimension("head", "activation").sample(trial, "head.activation") if dense_layers else "relu",
    )

    def train_value(key: str) -> Any:
        return space.dimension("train", key).sample(trial, f"train.{key}")

    optimizer = train_value("optimizer")
    schedule = train_value("schedule")
    train = TrainSettings(
        optimizer=optimizer,
        lr=float(train_value("lr")),
        weight_decay=float(train_value("weight_decay")),
        # Inactive knobs keep their defaults so equal networks hash equal.
        momentum=float(train_value("momentum")) if optimizer == "sgd" else TrainSettings.momentum,
        batch_size=train_value("batch_size"),
        epochs=epochs if epochs is not None else train_value("epochs"),
        label_smoothing=float(train_value("label_smoothing")),
        schedule=schedule,
        warmup=float(train_value("warmup")) if schedule != "constant" else TrainSettings.warmup,
    )
    augment = AugmentSettings(
        translate=space.dimension("augment", "translate").sample(trial, "augment.translate"),
        flip=space.dimension("augment", "flip").sample(trial, "augment.flip"),
        cutout=space.dimension("augment", "cutout").sample(trial, "augment.cutout"),
    )
    return Architecture(layers=tuple(layers), head=head, train=train, augment=augment)


def _sample_stages(space: SearchSpace, trial: SuggestingTrial) -> tuple[ConvLayer | PoolLayer, ...]:
    """The layers of the stage form: each stage 1+ convs of one width, then maybe a pool."""
    stages = space.dimension("network", "stages").sample(trial, "network.stages")
    per_stage_filters = "filters" in space.dimensions["stage"]
    if not per_stage_filters:
        base_filters = space.dimension("network", "filters").sample(trial, "network.filters")
        # Asked only when there is a second stage for it to act on (no dead parameters).
        growth = (
            space.dimension("network", "width_multiplier").sample(trial, "network.width_multiplier")
            if stages > 1
            else 1.0
        )
    layers: list[ConvLayer | PoolLayer] = []
    for stage in range(1, stages + 1):
        if per_stage_filters:
            filters = space.dimensions["stage"]["filters"].sample(trial, f"stage{stage}.filters")
        else:
            filters = max(1, int(round(base_filters * growth ** (stage - 1))))
        convs = space.dimension("stage", "convs").sample(trial, f"stage{stage}.convs")
        conv_args = {
            key: _layer_value(space, trial, stage, key)
            for key in ("kernel_size", "padding", "activation", "batch_norm")
        }
        stride = _layer_value(space, trial, stage, "stride")
        for index in range(convs):
            layers.append(ConvLayer(filters=filters, stride=stride if index == 0 else 1, **conv_args))
        if space.dimension("stage", "pool").sample(trial, f"stage{stage}.pool"):
            layers.append(
                PoolLayer(
                    pool_type=_layer_value(space, trial, stage, "pool_type"),
                    window=_layer_value(space, trial, stage, "pool_window"),
                    stride=_layer_value(space, trial, stage, "pool_stride"),
                )
            )
    return tuple(layers)


MAX_STAGE_SPLITS = 512  # ways of cutting an architecture into stages tried by `params_for`


def params_for(space: SearchSpace, arch: Any) -> dict[str, Any] | None:
    """Find the parameter values that sample to `arch`, by replaying the space's questions.

    Several stages can give the same layers (2 convs, then 1 conv and a pool, at one width, are
    also 3 convs and a pool), so every way of cutting runs of equal convs into stages is tried,
    fewest stages first, until one samples back to `arch`; None when none does.
    """
    from cnnsearch.space.sequence import sequence_answers

    target = arch.with_epochs(arch.train.epochs).canonical_hash()
    if space.form == "sequence":  # one way to ask for a sequence: position by position
        candidates: Iterator[dict[str, Any]] = iter([{**_common_answers(arch), **sequence_answers(arch)}])
    else:
        splits = itertools.islice(_stage_splits(arch), MAX_STAGE_SPLITS)
        candidates = ({**_common_answers(arch), **_stage_answers(arch, stages)} for stages in splits)
    for answers in candidates:
        recorder = _ParamRecorder(answers)
        try:
            sampled = space.sample(recorder, epochs=arch.train.epochs)
        except _NoMatch:
            continue
        if sampled.canonical_hash() == arch.with_epochs(sampled.train.epochs).canonical_hash() == target:
            return recorder.params
    return None


def _stage_splits(arch: Any) -> Iterator[list[dict[str, Any]]]:
    """Every cut of the architecture's conv runs into stages, fewest stages first."""
    merged = _merged_stages(arch)
    options = []
    for stage in merged:
        cuts = []
        for parts in _compositions(stage["convs"]):
            pieces = []
            for index, convs in enumerate(parts):
                last = index == len(parts) - 1
                piece = {**stage, "convs": convs, "stride": stage["stride"] if index == 0 else 1}
                if not last:  # only the last piece keeps the stage's pooling layer
                    piece = {key: value for key, value in piece.items() if not key.startswith("pool_")}
                    piece["pool"] = False
                pieces.append(piece)
            cuts.append(pieces)
        options.append(cuts)
    combos = itertools.product(*options)
    yield from sorted(
        ([piece for pieces in combo for piece in pieces] for combo in itertools.islice(combos, MAX_STAGE_SPLITS)),
        key=len,
    )


def _compositions(total: int) -> list[tuple[int, ...]]:
    """The ordered ways of writing `total` as a sum of positive parts, fewest parts first."""
    found = [
        tuple(b - a for a, b in zip((0, *cuts), (*cuts, total), strict=True))
        for size in range(total)
        for cuts in itertools.combinations(range(1, total), size)
    ]
    return sorted(found, key=len)


def _merged_stages(arch: Any) -> list[dict[str, Any]]:
    """Stages with as many convs as possible: a stage ends at a pool, or where a conv differs."""
    from cnnsearch.spec import ConvLayer, PoolLayer

    stages: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for layer in arch.layers:
        if isinstance(layer, ConvLayer):
            if (
                current is None
                or current.get("pool")
                or layer.filters != current["filters"]
                or layer.kernel_size != current["kernel_size"]
                or layer.stride != 1
            ):
                current = {
                    "convs": 0,
                    "filters": layer.filters,
                    "kernel_size": layer.kernel_size,
                    "stride": layer.stride,
                    "padding": layer.padding,
                    "activation": layer.activation,
                    "batch_norm": layer.batch_norm,
                    "pool": False,
                }
                stages.append(current)
            current["convs"] += 1
        elif isinstance(layer, PoolLayer) and current is not None:
            current.update(pool=True, pool_type=layer.pool_type, pool_window=layer.window, pool_stride=layer.stride)
    return stages


class _NoMatch(Exception):
    pass


def _stage_answers(arch: Any, stages: list[dict[str, Any]]) -> dict[str, Any]:
    """The answers of the stage form's questions for one cut of `arch` into stages."""
    answers: dict[str, Any] = {"network.stages": len(stages)}
    for index, stage in enumerate(stages, start=1):
        for key, value in stage.items():
            answers[f"stage{index}.{key}"] = value
            answers.setdefault(f"network.{key}", value)
    convs = [layer for layer in arch.layers if isinstance(layer, ConvLayer)]
    if convs:
        answers["network.filters"] = convs[0].filters
        if len(stages) > 1:
            answers["network.width_multiplier"] = stages[1]["filters"] / stages[0]["filters"]
    answers["head.dense_units"] = arch.head.dense[0] if arch.head.dense else 0
    return answers


def _common_answers(arch: Any) -> dict[str, Any]:
    """The answers of the questions both forms ask: the head, training and augmentation."""
    head, train, augment = arch.head, arch.train, arch.augment
    return {
        "head.pooling": head.pooling,
        "head.dense_layers": len(head.dense),
        "head.dropout": head.dropout,
        "head.activation": head.activation,
        **{f"train.{key}": getattr(train, key) for key in train.__dataclass_fields__},
        **{f"augment.{key}": getattr(augment, key) for key in augment.__dataclass_fields__},
    }


class _ParamRecorder:
    """A stand-in trial that answers each question with the value found in a given architecture."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.params: dict[str, Any] = {}
        self.answers = answers

    def _answer(self, name: str) -> Any:
        if name not in self.answers:
            raise _NoMatch(name)
        self.params[name] = self.answers[name]
        return self.answers[name]

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        value = self._answer(name)
        for choice in choices:
            if choice == value:
                return choice
        raise _NoMatch(name)

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        value = self._answer(name)
        if not low <= value <= high:
            raise _NoMatch(name)
        return int(value)

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        value = self._answer(name)
        if not low - 1e-12 <= value <= high + 1e-12:
            raise _NoMatch(name)
        return float(value)
