"""space.sample: TODO docstring."""

from __future__ import annotations

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
    """Draw one candidate, asking only for the parameters that exist in it."""
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

    dense_layers = space.dimension("head", "dense_layers").sample(trial, "head.dense_layers")
    units = space.dimension("head", "dense_units").sample(trial, "head.dense_units") if dense_layers else 0
    head = Head(
        pooling=space.dimension("head", "pooling").sample(trial, "head.pooling"),
        dense=(units,) * dense_layers,
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


def params_for(space: SearchSpace, arch: Any) -> dict[str, Any] | None:
    """Find the parameter values that sample to `arch`, by replaying the space's questions."""
    recorder = _ParamRecorder(arch)
    try:
        sampled = space.sample(recorder, epochs=arch.train.epochs)
    except _NoMatch:
        return None
    return (
        recorder.params if sampled.canonical_hash() == arch.with_epochs(sampled.train.epochs).canonical_hash() else None
    )


class _NoMatch(Exception):
    pass


class _ParamRecorder:
    """A stand-in trial that answers each question with the value found in a given architecture."""

    def __init__(self, arch: Any) -> None:
        from cnnsearch.spec import ConvLayer, PoolLayer

        self.params: dict[str, Any] = {}
        convs = [layer for layer in arch.layers if isinstance(layer, ConvLayer)]
        stages: list[dict[str, Any]] = []
        current: dict[str, Any] | None = None
        for layer in arch.layers:
            if isinstance(layer, ConvLayer):
                # A stage ends at a pooling layer, or where the filters, kernel or stride change.
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
        self.answers: dict[str, Any] = {"network.stages": len(stages)}
        for index, stage in enumerate(stages, start=1):
            for key, value in stage.items():
                self.answers[f"stage{index}.{key}"] = value
                self.answers.setdefault(f"network.{key}", value)
        if convs:
            self.answers["network.filters"] = convs[0].filters
            if len(stages) > 1:
                self.answers["network.width_multiplier"] = stages[1]["filters"] / stages[0]["filters"]
        head, train, augment = arch.head, arch.train, arch.augment
        self.answers.update(
            {
                "head.pooling": head.pooling,
                "head.dense_layers": len(head.dense),
                "head.dense_units": head.dense[0] if head.dense else 0,
                "head.dropout": head.dropout,
                "head.activation": head.activation,
                **{f"train.{key}": getattr(train, key) for key in train.__dataclass_fields__},
                **{f"augment.{key}": getattr(augment, key) for key in augment.__dataclass_fields__},
            }
        )

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
