"""Owns the sampler and pruner tables (the CLI's choices come from them), Optuna's log
settings, and multi-objective pruning (`pareto_prune`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cnnsearch.errors import UserError
from cnnsearch.outcomes import TrialRecord

SAMPLERS = ("tpe", "random", "gp", "cmaes", "pso", "nsga2")

# Whether a sampler gets the flat encoding (cnnsearch/space/flat.py: every parameter the space can
# ask for, drawn in every trial). Decided per sampler, not a user knob; tests/search/test_flat_samplers.py
# holds each decision against what the sampler then models.
FLAT_ENCODING = {
    # Multivariate TPE with group=True already models conditional parameters (it splits them into
    # groups that occur together); the flat encoding would add values that never reach the network
    # to its density estimates. Measured not to help (bench/swarm_settings.py, 30 seeds): off.
    "tpe": False,
    "random": False,  # no model: the extra values would only be noise in the stored trials
    # Models only the parameters every finished trial has: without it, every stage past the
    # smallest network's is drawn at random (Optuna's "dynamic search space" warning); with it,
    # all parameters enter the Gaussian process and the warning is gone. Measured alike either way
    # (bench/swarm_settings.py, 16 seeds, 40 trials: -1.299 flat, -1.274 without): on, for that model.
    "gp": True,
    # CMA-ES models numeric ranges only, and every numeric range of the shipped spaces (stages or
    # positions, dropout, lr, weight decay) is in every candidate: the encoding adds nothing it models.
    # Measured worse with it (bench/swarm_settings.py, 30 seeds: -1.388 against -1.202 at 40 trials,
    # -1.004 against -0.918 at 100): off.
    "cmaes": False,
    "pso": True,  # a particle needs one coordinate per parameter in every trial
    # Would cross over the per-stage parameters too; measured the same either way (-1.826 / -1.825 at
    # 40 trials, -1.430 / -1.430 at 100, 30 seeds): off, so trials store only what the network uses.
    "nsga2": False,
}


SWARM_SINGLE_OBJECTIVE = (
    "--sampler pso optimises one objective; for a Pareto search (--objective with two) choose --sampler nsga2 or tpe"
)

PRUNERS = ("hyperband", "asha", "median", "none")


def quiet_optuna() -> None:
    """Optuna's info logs and experimental-feature warnings are noise in our own progress view."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    # Our workers beat themselves (`Heartbeat`) around ask/tell; Optuna's hint is for optimize().
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


# Packages a sampler needs beyond Optuna: (module, pip name). A missing one is refused before a
# run is created or resumed, instead of failing every trial.
SAMPLER_NEEDS: dict[str, tuple[tuple[str, str], ...]] = {
    "gp": (("torch", "torch"), ("scipy", "scipy")),
    "cmaes": (("cmaes", "cmaes"),),
}
# Study metric names per objective (optuna-dashboard, Optuna's plots): the leaderboard's columns.
METRIC_NAMES = {"accuracy": "val_acc", "params": "params", "flops": "flops", "latency": "latency_ms"}


def check_sampler_installed(name: str) -> None:
    """A UserError naming the `pip install` when the sampler's packages are missing."""
    from importlib.util import find_spec

    missing = [pip for module, pip in SAMPLER_NEEDS.get(name, ()) if find_spec(module) is None]
    if missing:
        raise UserError(
            f"--sampler {name} needs {', '.join(missing)}, which is not installed; pip install {' '.join(missing)}, "
            f"or choose another --sampler"
        )


def make_sampler(
    name: str,
    seed: int,
    *,
    multi_objective: bool,
    worker_index: int = 0,
    dimensions: dict[str, Any] | None = None,
    same_network: Any = None,
) -> Any:
    """The sampler named `name`; `dimensions`: the space's flat encoding (name -> distribution),
    and `same_network`: its key of a trial's values by network (space.flat.network_key), needed
    by the swarm (`pso`) only."""
    import optuna

    # Each worker gets its own stream: equal seeds would make all workers propose the same points.
    # Within numpy's seed range (a joined worker's index runs to ~10^6: 7919x that is over 2^32).
    seed = (seed + 7919 * worker_index) % 2**32
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed,
            multivariate=True,
            group=True,
            constant_liar=True,
            n_startup_trials=8,
        )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if name == "pso":
        from cnnsearch.search.pso import SwarmSampler

        if multi_objective:
            raise UserError(SWARM_SINGLE_OBJECTIVE)
        return SwarmSampler(dimensions or {}, seed=seed, same_network=same_network)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    raise UserError(f"--sampler {name!r} is not valid; choose one of {', '.join(SAMPLERS)}")


def make_pruner(name: str, epochs: int) -> Any:
    import optuna

    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1), reduction_factor=3)
    if name == "asha":  # one bracket of successive halving: TPE learns from every trial, not a bracket's share
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "median":
        from cnnsearch.search.budget import MEDIAN_WARMUP_EPOCHS

        # Steps are epochs from 1; the earliest step Optuna prunes at is n_warmup_steps.
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=MEDIAN_WARMUP_EPOCHS)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UserError(f"--pruner {name!r} is not valid; choose one of {', '.join(PRUNERS)}")


COST_ATTRS = {"params": "params", "flops": "flops", "latency": "latency_ms"}  # objective -> trial attr


def pareto_prune(study: Any, number: int, epoch: int, accuracy: float, cost_key: str, cost: float | None) -> str | None:
    """Multi-objective pruning: stop a trial that is dominated at the same epoch.

    Optuna refuses pruning in multi-objective studies because it compares whole value
    vectors. Here only accuracy is still being learned: the cost (params, FLOPs, latency)
    is known before epoch 1. So a trial can be judged like a single-objective one, against
    the finished trials that cost no more: if one of them was more accurate at this same
    epoch, this trial cannot join the front by the same route, and it is stopped.
    """
    import optuna

    if cost is None:
        return None
    for other in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        record = TrialRecord.of(other)
        curve = record.val_acc
        other_cost = getattr(record, cost_key)
        if other.number == number or other_cost is None or len(curve) < epoch:
            continue
        if other_cost <= cost and curve[epoch - 1] > accuracy:
            return f"dominated at epoch {epoch} by trial {other.number} ({curve[epoch - 1]:.2%} at {cost_key} {other_cost:,.4g} <= {cost:,.4g})"
    return None


@contextmanager
def optuna_log_to(path: Path) -> Iterator[None]:
    """Send Optuna's log records (a sampler's fallback warnings, one per parameter and trial) to
    the run's log file instead of the terminal, where they would break the live view."""
    import optuna

    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("optuna")
    logger.addHandler(handler)
    optuna.logging.disable_default_handler()
    try:
        yield
    finally:
        optuna.logging.enable_default_handler()
        logger.removeHandler(handler)
        handler.close()
