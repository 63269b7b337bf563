"""Owns the cost model: how many seconds an epoch of a candidate will take on this device (the
rules that refuse or stop candidates with it: search/budget.py).

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
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cnnsearch.outcomes import TrialRecord

# Prior ratios between the three terms, in "work units" (FLOPs): fitted on 10 digits trials on this
# project's 2-core CPU machine (~90 GFLOP/s of conv work, ~4.7 ms per step, ~0.2 s per epoch).
PRIOR_MAPS = 730.0  # per feature-map value: ~8 ns at ~90 GFLOP/s (Fashion-MNIST trials, this machine)
PRIOR_STEP = 4.2e8
PRIOR_EPOCH = 2.0e10
OPTIMIZER_WORK = 50.0  # AdamW reads and writes four tensors per parameter: memory-bound, ~50 FLOPs' time
PRIOR_WEIGHT = 0.001  # a tie-breaker for terms the trials leave undetermined; more biases the fit (tests)

MIN_TRIALS_TO_PREDICT = 1  # trials trained before any prediction (the first seeds the model)


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
    worker: str = "",
    threads: int | None = None,
) -> list[Observation]:
    """The trained trials of a study as observations, for one device and one split's sizes
    (`input_shape`: the data's, to count each trial's feature maps; None: not counted).

    Only trials timed alike: on `device`, on the host of `worker` ("host:pid"; "": any) and with
    `threads` CPU threads (None: any). A run resumed with another --workers trains with other
    threads, and a worker on another machine shares the study but not its speed.
    """
    host = worker.rpartition(":")[0]
    found = []
    for trial in trials:
        record = TrialRecord.of(trial)
        if record.outcome not in CALIBRATING_OUTCOMES or record.device != device:
            continue
        if record.resume_of is not None:  # its seconds include its origin's, timed by another process
            continue
        if host and record.worker and record.worker.rpartition(":")[0] != host:
            continue
        if threads is not None and record.threads is not None and record.threads != threads:
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
