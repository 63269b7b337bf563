"""Owns the cost model: how many seconds an epoch of a candidate will take on this device, and
the budget rule that refuses (as `too_slow`) candidates the time left cannot afford.

A prediction uses only what is known before training: FLOPs per image, parameters, images per
epoch and batch size. It is calibrated on the trials this run has already trained (refit as
trials finish): the first trial is never predicted, it seeds the model. The fit minimises the
relative error, so a 0.2 s epoch counts as much as a 60 s one.

Seconds per epoch = a * work + e * maps + b * steps + d, where
  work  = FLOPs per image * (3 * training images + validation images)   (forward + backward, then validation)
          + OPTIMIZER_WORK * params * steps                              (the optimiser's update)
  maps  = feature-map values written per image (spec.activation_count) * (3 * training + validation images):
          batch norm, activations, padding and pooling are memory-bound, and on a CPU they cost
          more than the FLOPs of these small networks (on Fashion-MNIST a 2-MFLOP candidate with
          separable blocks took 22.5 s per epoch, a 35-MFLOP one of dense convs 14 s: bench/RESULTS.md)
  steps = optimiser steps per epoch (fixed overhead per step: the Python loop, the optimiser call)
  d     = a fixed cost per epoch (the trainer's epoch loop, a share of the trial's set-up).
The optimiser's share is a fixed number of FLOP-equivalents per parameter, not a fitted term: a
fitted one came out far too large from digits' small networks (their parameter counts barely
constrain it) and refused every flatten head on Fashion-MNIST as too slow (bench/RESULTS.md).
With fewer trials than terms the shape of a prior (a CPU's typical ratios) is scaled to the data;
with more, a least-squares fit is pulled toward that prior.

Pure Python, no numpy or torch (a handful of trials, four terms).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cnnsearch.outcomes import TrialRecord
from cnnsearch.words import count

# Prior ratios between the three terms, in "work units" (FLOPs): fitted on 10 digits trials on this
# project's 2-core CPU machine (~90 GFLOP/s of conv work, ~4.7 ms per step, ~0.2 s per epoch).
PRIOR_MAPS = 730.0  # per feature-map value: ~8 ns at ~90 GFLOP/s (Fashion-MNIST trials, this machine)
PRIOR_STEP = 4.2e8
PRIOR_EPOCH = 2.0e10
OPTIMIZER_WORK = 50.0  # AdamW reads and writes four tensors per parameter: memory-bound, ~50 FLOPs' time
PRIOR_WEIGHT = 0.001  # a tie-breaker for terms the trials leave undetermined; more biases the fit (tests)

FIRST_RUNG_SHARE = 0.10  # a first rung may take at most this share of the whole budget...
CHEAP_FACTOR = 2.0  # ...unless its epoch is within this factor of the fastest trained one (a small budget)
MIN_TRIALS_TO_PREDICT = 1  # trials trained before any prediction (the first seeds the model)
# Measured after its first epoch, a trial whose whole schedule would take more than this share of
# the budget is stopped (pruned), unless its epoch is within CHEAP_FACTOR of the fastest other
# trained one. The first trial is never predicted: on Fashion-MNIST one took 401 s of a 420 s
# search budget (bench/RESULTS.md). Half, not less: a slow candidate may be the best one.
MAX_TRIAL_SHARE = 0.5


@dataclass(frozen=True)
class CostFeatures:
    """What a candidate's epoch costs, known before training."""

    flops: float  # forward FLOPs of one image
    params: float  # trainable parameters
    train_images: int  # images per epoch
    val_images: int  # images evaluated after each epoch
    batch_size: int  # images per optimiser step
    activations: float = 0.0  # feature-map values written per image (spec.activation_count)

    @property
    def steps(self) -> int:
        return max(1, self.train_images // max(1, self.batch_size))

    def terms(self) -> tuple[float, float, float, float]:
        passes = 3 * self.train_images + self.val_images
        work = self.flops * passes + OPTIMIZER_WORK * self.params * self.steps
        return (work, self.activations * passes, float(self.steps), 1.0)


@dataclass(frozen=True)
class Observation:
    """One trained trial: its features and the seconds one of its epochs took."""

    features: CostFeatures
    epoch_seconds: float


class CostModel:
    """Seconds per epoch of a candidate; `None` until a trial has been trained."""

    def __init__(self, observations: Iterable[Observation] = ()) -> None:
        self.observations = [o for o in observations if o.epoch_seconds > 0 and math.isfinite(o.epoch_seconds)]
        self.coefficients = self._fit()

    @property
    def ready(self) -> bool:
        return self.coefficients is not None

    def predict(self, features: CostFeatures) -> float | None:
        """Predicted seconds per epoch, or None before the first trained trial."""
        if self.coefficients is None:
            return None
        return sum(c * t for c, t in zip(self.coefficients, features.terms(), strict=True))

    def _fit(self) -> tuple[float, ...] | None:
        if len(self.observations) < MIN_TRIALS_TO_PREDICT:
            return None
        prior_shape = (1.0, PRIOR_MAPS, PRIOR_STEP, PRIOR_EPOCH)
        # The prior's scale: the geometric mean of what each observation says about it.
        logs = [
            math.log(o.epoch_seconds / _dot(prior_shape, o.features.terms()))
            for o in self.observations
            if _dot(prior_shape, o.features.terms()) > 0
        ]
        if not logs:
            return None
        scale = math.exp(sum(logs) / len(logs))
        prior = tuple(scale * p for p in prior_shape)
        if len(self.observations) < 3:
            return prior
        return _ridge_nonnegative(self.observations, prior)


def _dot(a: Iterable[float], b: Iterable[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _ridge_nonnegative(
    observations: list[Observation], prior: tuple[float, ...], *, sweeps: int = 500
) -> tuple[float, ...]:
    """min sum_i (theta.x_i / y_i - 1)^2 + w * sum_j (theta_j / p_j - 1)^2 over theta >= 0.

    Solved in the prior's own units (u_j = theta_j / p_j) by projected coordinate descent: three
    unknowns and a few dozen rows, so this converges in a few dozen sweeps.
    """
    terms = len(prior)
    rows = [
        tuple(p * t / o.epoch_seconds for p, t in zip(prior, o.features.terms(), strict=True)) for o in observations
    ]
    u = [1.0] * terms
    for _ in range(sweeps):
        change = 0.0
        for j in range(terms):
            # d/du_j of the objective = 0, others fixed.
            numerator = PRIOR_WEIGHT
            denominator = PRIOR_WEIGHT
            for row in rows:
                rest = sum(row[k] * u[k] for k in range(terms) if k != j)
                numerator += row[j] * (1.0 - rest)
                denominator += row[j] * row[j]
            new = max(0.0, numerator / denominator)
            change = max(change, abs(new - u[j]))
            u[j] = new
        if change < 1e-9:
            break
    return tuple(uj * pj for uj, pj in zip(u, prior, strict=True))


CALIBRATING_OUTCOMES = ("complete", "pruned")  # whole epochs, timed; others are partial or untrained


def observations_from(
    trials: Iterable[Any],
    *,
    device: str,
    train_images: int,
    val_images: int,
    input_shape: tuple[int, int, int] | None = None,
    num_classes: int = 10,
) -> list[Observation]:
    """The trained trials of a study as observations, for one device and one split's sizes
    (`input_shape`: the data's, to count each trial's feature maps; None: not counted)."""
    found = []
    for trial in trials:
        record = TrialRecord.of(trial)
        if record.outcome not in CALIBRATING_OUTCOMES or record.device != device:
            continue
        if not record.epochs_run or not record.train_seconds or record.flops is None or record.params is None:
            continue
        batch = ((record.arch or {}).get("train") or {}).get("batch_size")
        if not isinstance(batch, int) or batch < 1:
            continue
        maps = _maps(record.arch, input_shape, num_classes)
        features = CostFeatures(record.flops, record.params, train_images, val_images, batch, maps)
        found.append(Observation(features, record.train_seconds / record.epochs_run))
    return found


def _maps(arch: Any, input_shape: tuple[int, int, int] | None, num_classes: int) -> float:
    from cnnsearch.errors import InfeasibleArchitecture
    from cnnsearch.spec import Architecture, activation_count

    if input_shape is None or not isinstance(arch, dict):
        return 0.0
    try:
        return float(activation_count(Architecture.from_dict(arch), input_shape, num_classes))
    except (InfeasibleArchitecture, KeyError, TypeError, ValueError):  # an old or damaged record: no maps
        return 0.0


def first_rung_epochs(pruner: str, epochs: int) -> int:
    """The first epoch at which a trial can be stopped: what a new candidate must at least reach."""
    if pruner in ("asha", "hyperband"):
        return min(1, epochs)  # min_resource=1
    if pruner == "median":
        return min(2, epochs)  # n_warmup_steps=1: judged from epoch 2 on
    return epochs  # no pruner: the whole schedule


@dataclass(frozen=True)
class BudgetVerdict:
    """Whether a candidate may start, with the prediction behind the answer."""

    epoch_seconds: float | None  # predicted seconds per epoch; None: not predicted yet
    refused: str = ""  # the too_slow reason; "" when the candidate may start
    measured: dict[str, float] = field(default_factory=dict)  # params and FLOPs, known before training


def judge_candidate(
    arch: Any,
    trials: Iterable[Any],
    *,
    device: str,
    data: Any,
    pruner: str,
    time_left_s: float | None,
    budget_s: float | None,
) -> BudgetVerdict:
    """The cost model, calibrated on `trials` (this run's), judging one candidate on `data`.

    `data` is the search's DeviceData (only its sizes are read). An infeasible candidate is not
    judged here: its training says why, as for every other infeasible candidate.
    """
    from cnnsearch.errors import InfeasibleArchitecture
    from cnnsearch.spec import activation_count, count_params, forward_flops

    train_images, val_images = len(data.train_y), len(data.val_y)
    try:
        flops = forward_flops(arch, data.input_shape, data.num_classes)
        params = count_params(arch, data.input_shape, data.num_classes)
        maps = activation_count(arch, data.input_shape, data.num_classes)
    except InfeasibleArchitecture:
        return BudgetVerdict(None)
    features = CostFeatures(flops, params, train_images, val_images, arch.train.batch_size, maps)
    observed = observations_from(
        trials,
        device=device,
        train_images=train_images,
        val_images=val_images,
        input_shape=data.input_shape,
        num_classes=data.num_classes,
    )
    verdict = judge_budget(
        CostModel(observed).predict(features),
        epochs=arch.train.epochs,
        first_rung=first_rung_epochs(pruner, arch.train.epochs),
        time_left_s=time_left_s,
        budget_s=budget_s,
        fastest_epoch_s=min((o.epoch_seconds for o in observed), default=None),
    )
    return BudgetVerdict(verdict.epoch_seconds, verdict.refused, {"params": params, "flops": flops})


def judge_budget(
    epoch_seconds: float | None,
    *,
    epochs: int,
    first_rung: int,
    time_left_s: float | None,
    budget_s: float | None,
    fastest_epoch_s: float | None = None,
) -> BudgetVerdict:
    """Refuse a candidate whose first rung or whole schedule the budget cannot afford.

    Without a budget (no --timeout) nothing is refused. With one, a candidate is refused when
    its first rung would take more than FIRST_RUNG_SHARE of the whole budget (it would crowd out
    the others) and its epoch is over CHEAP_FACTOR x the fastest trained epoch (`fastest_epoch_s`:
    in a budget so small that every candidate is over the share, the cheap ones still train),
    or when its whole schedule cannot finish in the time left (a trial cut by the deadline is
    neither exportable nor finished: its epochs would be wasted).
    """
    if epoch_seconds is None or budget_s is None or time_left_s is None:
        return BudgetVerdict(epoch_seconds)
    rung_s = epoch_seconds * first_rung
    full_s = epoch_seconds * epochs
    cheap = fastest_epoch_s is not None and epoch_seconds <= CHEAP_FACTOR * fastest_epoch_s
    if rung_s > FIRST_RUNG_SHARE * budget_s and not cheap:
        return BudgetVerdict(
            epoch_seconds,
            f"predicted {_seconds(rung_s)} to its first rung (epoch {first_rung}), more than "
            f"{FIRST_RUNG_SHARE:.0%} of the {_seconds(budget_s)} budget",
        )
    if full_s > time_left_s:
        return BudgetVerdict(
            epoch_seconds,
            f"predicted {_seconds(full_s)} for its {count(epochs, 'epoch')}, more than the {_seconds(max(0.0, time_left_s))} left",
        )
    return BudgetVerdict(epoch_seconds)


def judge_first_epoch(
    epoch_seconds: float, trials: Iterable[Any], *, device: str, data: Any, epochs: int, budget_s: float | None
) -> str:
    """Why a trial should stop after its first epoch, measured at `epoch_seconds`; "" to go on.

    With a budget, a trial is stopped when its whole schedule would take more than MAX_TRIAL_SHARE
    of it and its epoch is over CHEAP_FACTOR x the fastest epoch of the other trained trials of
    `trials` on `device` (there are none for the first trial, which nothing could predict).
    """
    if budget_s is None or epochs <= 1:
        return ""
    full_s = epoch_seconds * epochs
    if full_s <= MAX_TRIAL_SHARE * budget_s:
        return ""
    observed = observations_from(trials, device=device, train_images=len(data.train_y), val_images=len(data.val_y))
    fastest = min((o.epoch_seconds for o in observed), default=None)
    if fastest is not None and epoch_seconds <= CHEAP_FACTOR * fastest:
        return ""
    return (
        f"too slow for the budget: its {count(epochs, 'epoch')} would take ~{_seconds(full_s)} at the measured "
        f"{_seconds(epoch_seconds)} per epoch, more than {MAX_TRIAL_SHARE:.0%} of the {_seconds(budget_s)} budget"
    )


def judge_epoch(
    seconds: float,
    *,
    epoch: int,
    epochs_done: int,
    epochs: int,
    trials: Callable[[], Iterable[Any]],
    device: str,
    data: Any,
    budget_s: float | None,
    time_left_s: float | None,
) -> str:
    """Why a running trial should stop after `epoch`, "" to go on, from `seconds` measured over
    the `epochs_done` epochs this process trained: a fresh trial's first epoch against the budget
    (judge_first_epoch; `trials` is called only then), every epoch against the time left."""
    if epoch == 1 and epochs_done == 1:
        reason = judge_first_epoch(seconds, trials(), device=device, data=data, epochs=epochs, budget_s=budget_s)
        if reason:
            return reason
    return judge_time_left(seconds, epochs_done=epochs_done, epochs_left=epochs - epoch, time_left_s=time_left_s)


def judge_time_left(seconds: float, *, epochs_done: int, epochs_left: int, time_left_s: float | None) -> str:
    """Why a running trial should stop now, "" to go on: at its pace so far (`seconds` for
    `epochs_done` epochs) its `epochs_left` epochs cannot finish in the time left, and a trial cut
    by the deadline is neither finished nor exportable (the rule before a start, on measurement)."""
    if time_left_s is None or epochs_done <= 0 or epochs_left <= 0:
        return ""
    pace = seconds / epochs_done
    needed = pace * epochs_left
    if needed <= time_left_s:
        return ""
    return (
        f"too slow for the time left: its {count(epochs_left, 'remaining epoch')} would take ~{_seconds(needed)} "
        f"at the measured {_seconds(pace)} per epoch, more than the {_seconds(max(0.0, time_left_s))} left"
    )


def _seconds(value: float) -> str:
    if value < 90:
        return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"
    if value < 5400:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"
