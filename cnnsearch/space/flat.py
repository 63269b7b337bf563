"""Owns the flat encoding of a space: every parameter a space can ever ask for, sampled in every
trial, so a relative sampler (GP, CMA-ES, NSGA-II, the swarm) sees one fixed-dimension space.

`sample_architecture` asks only for the parameters a candidate has: `stage3.kernel_size` exists
only in 3-stage candidates, `head.dense_units` only with a dense layer. Optuna's relative samplers
model the parameters every trial has (the intersection) and draw the rest at random, so on a
conditional space they search the architecture at random. `sample_flat` first suggests every
parameter of `flat_dimensions(space)` on the trial, then builds the candidate with the same
`sample_architecture`, whose questions Optuna answers from the values already drawn: the network,
and so its dedup hash, depend on the active values only, exactly as without the flat encoding.
The inactive values are stored with the trial (a sampler learns nothing from them) and never
reach the network.

One function per form of space lists its parameters (`stage_dimensions` for the stage form,
`sequence_distributions` for the sequence form, from the sequence module's own list); a new form
plugs in by adding its function to `DIMENSIONS_OF_FORM`.

Needs no Optuna import until a function is called.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from cnnsearch.space.sample import _layer_value, sample_architecture

if TYPE_CHECKING:
    from cnnsearch.space.parse import Dimension, SearchSpace
    from cnnsearch.space.sample import SuggestingTrial
    from cnnsearch.spec import Architecture

# Layer keys a stage's convs take from [stage] or [network], in the order sample_architecture asks.
CONV_KEYS = ("kernel_size", "padding", "activation", "batch_norm", "stride")
POOL_KEYS = ("pool_type", "pool_window", "pool_stride")


class _DistributionRecorder:
    """A stand-in trial that notes the Optuna distribution of every question and answers its lowest value."""

    def __init__(self) -> None:
        self.asked: dict[str, Any] = {}

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        from optuna.distributions import CategoricalDistribution

        self.asked[name] = CategoricalDistribution(list(choices))
        return choices[0]

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        from optuna.distributions import IntDistribution

        self.asked[name] = IntDistribution(low, high, log=log, step=step)
        return low

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        from optuna.distributions import FloatDistribution

        self.asked[name] = FloatDistribution(low, high, log=log, step=step)
        return low


def _largest(dimension: Dimension) -> Any:
    """The largest value a dimension can take."""
    if dimension.kind in ("int", "float"):
        return dimension.high
    return max(dimension.choices) if dimension.kind == "choice" else dimension.value


def _may_be(dimension: Dimension, test: Callable[[Any], bool]) -> bool:
    """Whether some value of a (fixed or choice) dimension passes `test`."""
    values = dimension.choices if dimension.kind == "choice" else (dimension.value,)
    return any(test(value) for value in values)


def stage_dimensions(space: SearchSpace, *, epochs: int | None = None) -> dict[str, Any]:
    """Every parameter the stage form can ask for (name -> Optuna distribution), in the order it asks.

    Mirrors `sample_architecture` with every condition taken as true wherever some candidate makes
    it true (the most stages, a dense layer, a pooling layer, sgd, a warm-up schedule);
    tests/space/test_flat.py holds it against the names that sampling really asks for.
    """
    recorder = _DistributionRecorder()

    def ask(table: str, key: str, name: str) -> None:
        space.dimension(table, key).sample(recorder, name)

    ask("network", "stages", "network.stages")
    most_stages = int(_largest(space.dimension("network", "stages")))
    per_stage_filters = "filters" in space.dimensions["stage"]
    if not per_stage_filters:
        ask("network", "filters", "network.filters")
        if most_stages > 1:
            ask("network", "width_multiplier", "network.width_multiplier")
    pools = _may_be(space.dimension("stage", "pool"), bool)
    for stage in range(1, most_stages + 1):
        if per_stage_filters:
            ask("stage", "filters", f"stage{stage}.filters")
        ask("stage", "convs", f"stage{stage}.convs")
        for key in CONV_KEYS:
            _layer_value(space, recorder, stage, key)
        ask("stage", "pool", f"stage{stage}.pool")
        for key in POOL_KEYS if pools else ():
            _layer_value(space, recorder, stage, key)

    dense = int(_largest(space.dimension("head", "dense_layers"))) > 0
    ask("head", "dense_layers", "head.dense_layers")
    if dense:
        ask("head", "dense_units", "head.dense_units")
    for key in ("pooling", "dropout", *(("activation",) if dense else ())):
        ask("head", key, f"head.{key}")

    train_keys = ["optimizer", "lr", "weight_decay"]
    if _may_be(space.dimension("train", "optimizer"), lambda value: value == "sgd"):
        train_keys.append("momentum")
    train_keys += ["batch_size", *(("epochs",) if epochs is None else ()), "label_smoothing", "schedule"]
    if _may_be(space.dimension("train", "schedule"), lambda value: value != "constant"):
        train_keys.append("warmup")
    for key in train_keys:
        ask("train", key, f"train.{key}")
    for key in ("translate", "flip", "cutout"):
        ask("augment", key, f"augment.{key}")
    return recorder.asked


def sequence_distributions(space: SearchSpace, *, epochs: int | None = None) -> dict[str, Any]:
    """Every parameter the sequence form can ask for (name -> Optuna distribution), from
    `sequence.sequence_dimensions`, which that form keeps beside its sampler."""
    from cnnsearch.space.sequence import sequence_dimensions

    recorder = _DistributionRecorder()
    for name, dimension in sequence_dimensions(space).items():
        if name != "train.epochs" or epochs is None:
            dimension.sample(recorder, name)
    return recorder.asked


# The function that lists every parameter of each form of space (`SearchSpace.form`).
DIMENSIONS_OF_FORM: dict[str, Callable[..., dict[str, Any]]] = {
    "stages": stage_dimensions,
    "sequence": sequence_distributions,
}


def flat_dimensions(space: SearchSpace, *, epochs: int | None = None) -> dict[str, Any]:
    """Every parameter the space can ever ask for: name -> Optuna distribution (fixed keys are none).

    `epochs`: the run's --epochs; when given, `train.epochs` is not a parameter.
    """
    return DIMENSIONS_OF_FORM[space.form](space, epochs=epochs)


def suggest(trial: SuggestingTrial, name: str, distribution: Any) -> Any:
    """Ask `trial` for `name` with the question that gives `distribution`."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, list(distribution.choices))
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(
            name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )
    return trial.suggest_float(name, distribution.low, distribution.high, step=distribution.step, log=distribution.log)


def sample_flat(space: SearchSpace, trial: SuggestingTrial, *, epochs: int | None = None) -> Architecture:
    """Draw every parameter of the space, then the candidate from the active ones only.

    The candidate is the one `sample_architecture` gives for the same active values: it asks
    again, and a trial answers a repeated question with the value it gave (an Optuna trial, a
    FixedTrial). A trial queued with only the active values (warm start) gets the others drawn.
    """
    for name, distribution in flat_dimensions(space, epochs=epochs).items():
        suggest(trial, name, distribution)
    return sample_architecture(space, trial, epochs=epochs)


class _Asked:
    """Answers from given values and notes which names sampling asks for."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        self.names: list[str] = []

    def _answer(self, name: str) -> Any:
        self.names.append(name)
        return self.values[name]

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        return self._answer(name)

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return self._answer(name)

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float:
        return self._answer(name)


def active_params(space: SearchSpace, params: dict[str, Any], *, epochs: int | None = None) -> dict[str, Any] | None:
    """The values among a trial's `params` that its network uses (the rest: flat encoding only);
    None when the values do not sample in this space (a name missing)."""
    asked = _Asked(params)
    try:
        sample_architecture(space, asked, epochs=epochs)
    except (KeyError, ValueError, TypeError):
        return None
    return {name: params[name] for name in dict.fromkeys(asked.names)}


def network_key(space: SearchSpace, *, epochs: int | None = None) -> Callable[[dict[str, Any]], Hashable]:
    """A key of a trial's values: the canonical hash of the network and training they build,
    the one the search's duplicates are found by (so inactive values do not count); None for
    values that do not sample in this space."""

    def key(params: dict[str, Any]) -> Hashable:
        try:
            return sample_architecture(space, _Asked(params), epochs=epochs).canonical_hash()
        except (KeyError, ValueError, TypeError):
            return None

    return key
