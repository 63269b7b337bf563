"""Owns the particle swarm (`SwarmSampler`, `--sampler pso`): an Optuna sampler that moves a
swarm of particles through the unit cube onto which every parameter of the space is mapped.

Each parameter is one coordinate in [0, 1]: a range linearly (on a log scale for `log = true`),
an integer range, a stepped float or a choice as equal bins, one per value (choices in the order
the space file lists them). A particle's next position follows the canonical update

    v <- w v + c1 r1 (personal best - x) + c2 r2 (swarm best - x),   x <- x + v

with r1, r2 uniform per coordinate, the speed capped per coordinate, and walls that stop a
coordinate at 0 or 1. The swarm sees every parameter through the flat encoding
(`cnnsearch.space.flat`): parameters of stages a candidate does not have still move with it.

State lives in the study, not in memory: trial n belongs to particle n mod swarm_size (a re-run
of an interrupted trial to the particle of the trial it re-runs, its origin), and each
trial stores its particle, iteration, position and velocity in a system attribute (a trial
queued with all its values fixed, which the sampler never sees, is the particle's position with
no velocity of its own). A worker
rebuilds the swarm from the study's trials on every ask, so several workers share one swarm
(trial numbers are unique, so no two workers move the same particle at once), and a run killed
and resumed continues the same swarm. A trial queued with fixed values (warm start, a re-run)
is a position like any other: where its values differ from the proposal, its values count.

Learns from pruned trials as TPE does: COMPLETE trials rank by value, above every PRUNED trial;
pruned ones rank by their last reported accuracy, above those with none (infeasible, over
budget); FAIL trials are ignored.

Touches Optuna's public API only; the trial's system attribute is written through the storage
(run/optuna_private.py gives the storage and the trial's id).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from cnnsearch.outcomes import TrialRecord
from cnnsearch.run.optuna_private import storage_of, trial_id

STATE_KEY = "cnnsearch:swarm"  # the system attribute: {"particle", "iteration", "x": {name: u}, "v": {name: dv}}
# Defaults. w, c1, c2: the constriction coefficients of Clerc and Kennedy (2002), the textbook
# setting, not tuned here. Swarm size and speed cap: bench/swarm_settings.py (a made-up objective
# over the default space, 40 trials, 30 seeds): 5 and 10 particles did alike, so 5, which moves
# each particle 3 times in a 20-trial run; a cap of 0.3 did as well as 0.15 and better than 0.5.
# Thin evidence on real training (README, Samplers).
SWARM_SIZE = 5  # particles
INERTIA = 0.7298  # w: share of the last velocity kept
COGNITIVE = 1.49618  # c1: pull towards the particle's own best position
SOCIAL = 1.49618  # c2: pull towards the swarm's best position
MAX_SPEED = 0.3  # largest move per coordinate and step, in units of the coordinate's range
RETRIES = 20  # times a position that repeats an earlier trial's values is shaken before it is kept


def encode(distribution: BaseDistribution, value: Any) -> float:
    """A parameter value as a coordinate in [0, 1] (the centre of its bin for discrete ones)."""
    if isinstance(distribution, CategoricalDistribution):
        return (list(distribution.choices).index(value) + 0.5) / len(distribution.choices)
    assert isinstance(distribution, IntDistribution | FloatDistribution)
    low, high = float(distribution.low), float(distribution.high)
    if distribution.log:
        return (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
    if distribution.step is not None:
        bins = _bins(distribution)
        return (round((value - low) / distribution.step) + 0.5) / bins
    return (value - low) / (high - low)


def decode(distribution: BaseDistribution, u: float) -> Any:
    """The parameter value at coordinate u in [0, 1]."""
    u = min(max(u, 0.0), 1.0)
    if isinstance(distribution, CategoricalDistribution):
        return distribution.choices[min(int(u * len(distribution.choices)), len(distribution.choices) - 1)]
    assert isinstance(distribution, IntDistribution | FloatDistribution)
    low, high = distribution.low, distribution.high
    if distribution.log:
        value = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
        if isinstance(distribution, IntDistribution):
            return min(max(int(round(value)), low), high)
        return min(max(value, low), high)
    if distribution.step is not None:
        index = min(int(u * _bins(distribution)), _bins(distribution) - 1)
        value = low + index * distribution.step
        return int(value) if isinstance(distribution, IntDistribution) else min(float(value), high)
    return min(max(low + u * (high - low), low), high)  # low + 1.0 * (high - low) can overshoot high


def _bins(distribution: IntDistribution | FloatDistribution) -> int:
    assert distribution.step is not None
    return int(round((distribution.high - distribution.low) / distribution.step)) + 1


def _rank(trial: FrozenTrial, sign: float) -> tuple[int, float] | None:
    """How good a finished trial is (larger is better); None for a trial that taught nothing."""
    if trial.state == TrialState.COMPLETE and trial.values:
        return (2, sign * trial.values[0])
    if trial.state == TrialState.PRUNED:
        if trial.intermediate_values:
            return (1, sign * trial.intermediate_values[max(trial.intermediate_values)])
        return (0, 0.0)  # infeasible, over budget: pruned before any epoch, the worst positions
    return None


class SwarmSampler(BaseSampler):
    """Particle swarm optimisation over a fixed set of parameters (see the module docstring).

    `dimensions`: name -> distribution of every parameter the swarm moves (the space's flat
    encoding); parameters outside it are drawn at random. Single-objective studies only.
    """

    def __init__(
        self,
        dimensions: dict[str, BaseDistribution],
        *,
        swarm_size: int = SWARM_SIZE,
        inertia: float = INERTIA,
        cognitive: float = COGNITIVE,
        social: float = SOCIAL,
        max_speed: float = MAX_SPEED,
        seed: int | None = None,
        same_network: Callable[[dict[str, Any]], Hashable] | None = None,
    ) -> None:
        """`same_network`: what of a trial's values decides its network (equal keys: the same
        network; the flat encoding's active values); None: all of them."""
        if swarm_size < 1:
            raise ValueError(f"swarm_size >= 1 must hold, but got swarm_size={swarm_size}")
        if not 0 < max_speed <= 1:
            raise ValueError(f"0 < max_speed <= 1 must hold, but got max_speed={max_speed}")
        self._dimensions = {name: dist for name, dist in dimensions.items() if not dist.single()}
        self.swarm_size = swarm_size
        self.inertia, self.cognitive, self.social, self.max_speed = inertia, cognitive, social, max_speed
        self._seed = seed
        self._same_network = same_network
        self._random = RandomSampler(seed=seed)

    def reseed_rng(self) -> None:
        self._seed = None
        self._random.reseed_rng()

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(self._dimensions)

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        if len(study.directions) > 1:
            raise ValueError("SwarmSampler optimises one objective; use NSGA-II or TPE for several")
        names = sorted(search_space)
        dists = [search_space[name] for name in names]
        # One stream per trial: the same history and seed give the same move (each worker has its
        # own seed, strategies.make_sampler, so two workers do not propose alike).
        rng = np.random.default_rng(None if self._seed is None else [self._seed, trial.number])
        sign = 1.0 if study.directions[0] == StudyDirection.MAXIMIZE else -1.0
        history = [other for other in study.get_trials(deepcopy=False) if other.number != trial.number]
        particle = self._particle(trial)

        known = []  # (trial, position, rank) of every trial with a position
        for other in history:
            position = self._position(other, names, dists)
            if position is not None:
                known.append((other, position, _rank(other, sign)))
        mine = [item for item in known if self._particle(item[0]) == particle and item[0].number < trial.number]
        iteration = len(mine)  # earlier positions of this particle
        if not mine:  # the particle's first position: anywhere, with a random start velocity
            x = rng.uniform(0.0, 1.0, len(names))
            v = np.clip((rng.uniform(0.0, 1.0, len(names)) - x) / 2, -self.max_speed, self.max_speed)
        else:
            last, x_last, _ = max(mine, key=lambda item: item[0].number)
            state = last.system_attrs.get(STATE_KEY) or {"v": {}}  # a queued trial: no velocity of its own
            v_last = np.array([float(state["v"].get(name, 0.0)) for name in names])
            ranked_mine = [(rank, position) for _, position, rank in mine if rank is not None]
            ranked_all = [(rank, position) for _, position, rank in known if rank is not None]
            personal = max(ranked_mine, key=lambda item: item[0])[1] if ranked_mine else x_last
            swarm = max(ranked_all, key=lambda item: item[0])[1] if ranked_all else personal
            r1, r2 = rng.uniform(0.0, 1.0, len(names)), rng.uniform(0.0, 1.0, len(names))
            v = self.inertia * v_last + self.cognitive * r1 * (personal - x_last) + self.social * r2 * (swarm - x_last)
            v = np.clip(v, -self.max_speed, self.max_speed)
            x = x_last + v
            walls = (x < 0.0) | (x > 1.0)
            x, v = np.clip(x, 0.0, 1.0), np.where(walls, 0.0, v)  # a wall stops the coordinate

        seen = {self._network_key(other.params) for other in history if other.params}
        for _ in range(RETRIES):
            values = [decode(dist, u) for dist, u in zip(dists, x)]
            if self._network_key(dict(zip(names, values))) not in seen:
                break
            # The same values as an earlier trial would train nothing new: shake one coordinate.
            shaken = rng.integers(len(names))
            x = x.copy()
            x[shaken] = rng.uniform(0.0, 1.0)
        values = [decode(dist, u) for dist, u in zip(dists, x)]
        state = {
            "particle": particle,
            "iteration": iteration,
            "x": {name: float(u) for name, u in zip(names, x)},
            "v": {name: float(dv) for name, dv in zip(names, v)},
        }
        storage_of(study).set_trial_system_attr(trial_id(trial), STATE_KEY, state)
        return dict(zip(names, values))

    def _particle(self, trial: FrozenTrial) -> int:
        """The particle a trial moves: by its number, or a re-run's by its origin's."""
        origin = TrialRecord.of(trial).origin
        return (trial.number if origin is None else origin) % self.swarm_size

    def _network_key(self, params: dict[str, Any]) -> Hashable:
        """What decides the network of these values: two trials with equal keys train the same."""
        key = self._same_network(params) if self._same_network is not None else None
        return key if key is not None else tuple(sorted(params.items(), key=lambda item: item[0]))

    def _position(self, trial: FrozenTrial, names: Sequence[str], dists: Sequence[BaseDistribution]) -> Any:
        """Where a trial stands: its stored position where that gives its values, else its values
        encoded (a queued trial, or one from another sampler); None without values for every name."""
        if trial.state == TrialState.WAITING or any(name not in trial.params for name in names):
            return None
        try:
            encoded = np.array([encode(dist, trial.params[name]) for name, dist in zip(names, dists)])
        except (ValueError, ZeroDivisionError):  # a value outside today's space
            return None
        stored = (trial.system_attrs.get(STATE_KEY) or {}).get("x") or {}
        if all(name in stored for name in names):
            position = np.array([float(stored[name]) for name in names])
            if all(decode(dist, u) == trial.params[name] for name, dist, u in zip(names, dists, position)):
                return position
        return encoded
