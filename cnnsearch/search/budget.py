"""Owns the budget rules of a search with a --timeout: which candidates the time cannot afford,
judged with the cost model (search/cost.py) before they start (`too_slow`) and on measurement
after each epoch (pruned), and when a worker stops because nothing it is offered fits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from cnnsearch.search.cost import CostFeatures, CostModel, observations_from
from cnnsearch.words import count

FIRST_RUNG_SHARE = 0.10  # a first rung may take at most this share of the whole budget...
CHEAP_FACTOR = 2.0  # ...unless its epoch is within this factor of the fastest trained one (a small budget)
# Measured after its first epoch, a trial whose whole schedule would take more than this share of
# the budget is stopped (pruned), unless its epoch is within CHEAP_FACTOR of the fastest other
# trained one. The first trial is never predicted: on Fashion-MNIST one took 401 s of a 420 s
# search budget (bench/RESULTS.md). Half, not less: a slow candidate may be the best one.
MAX_TRIAL_SHARE = 0.5
# How a trial stopped on measurement for the time says so (its reason): a verdict on the time, not
# on the network, so a repeat of it is judged again, not copied (dedup).
TOO_SLOW_FOR_BUDGET, TOO_SLOW_FOR_TIME_LEFT = "too slow for the budget: ", "too slow for the time left: "
STOPPED_FOR_TIME = (TOO_SLOW_FOR_BUDGET, TOO_SLOW_FOR_TIME_LEFT)
MEDIAN_WARMUP_EPOCHS = 2  # --pruner median judges a trial from its second epoch on (strategies.make_pruner)


def first_rung_epochs(pruner: str, epochs: int) -> int:
    """The first epoch at which a trial can be stopped: what a new candidate must at least reach
    (`pruner`: --pruner, or "pareto" for a multi-objective search with one, strategies.pareto_prune)."""
    if pruner in ("asha", "hyperband", "pareto"):
        return min(
            1, epochs
        )  # min_resource=1 (Hyperband's later brackets start higher: judge_candidate's first_rung); pareto: every epoch
    if pruner == "median":
        return min(MEDIAN_WARMUP_EPOCHS, epochs)  # the earliest step it prunes at is n_warmup_steps
    return epochs  # no pruner: the whole schedule


@dataclass(frozen=True)
class BudgetVerdict:
    """Whether a candidate may start, with the prediction behind the answer."""

    epoch_seconds: float | None  # predicted seconds per epoch; None: not predicted yet
    refused: str = ""  # the too_slow reason; "" when the candidate may start
    measured: dict[str, float] = field(default_factory=dict)  # params and FLOPs, known before training
    late: bool = False  # refused for the time left (which only shrinks), not for its share of the budget


def judge_candidate(
    arch: Any,
    trials: Iterable[Any],
    *,
    device: str,
    data: Any,
    pruner: str,
    time_left_s: float | None,
    budget_s: float | None,
    epochs_done: int = 0,
    worker: str = "",
    threads: int | None = None,
    first_rung: int | None = None,
) -> BudgetVerdict:
    """The cost model, calibrated on `trials` (this run's, timed alike: observations_from),
    judging one candidate on `data`; `epochs_done`: the epochs a re-run's checkpoint holds;
    `first_rung`: the trial's own first rung where the pruner draws it per trial (Hyperband's
    bracket, optuna_private.hyperband_first_rung), else the pruner's (first_rung_epochs).

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
        worker=worker,
        threads=threads,
    )
    done = min(max(epochs_done, 0), arch.train.epochs)
    rung = first_rung if first_rung is not None else first_rung_epochs(pruner, arch.train.epochs)
    verdict = judge_budget(
        CostModel(observed).predict(features),
        epochs=arch.train.epochs - done,
        first_rung=max(0, min(rung, arch.train.epochs) - done),
        time_left_s=time_left_s,
        budget_s=budget_s,
        fastest_epoch_s=min((o.epoch_seconds for o in observed), default=None),
        remaining=done > 0,
    )
    return replace(verdict, measured={"params": params, "flops": flops})


def judge_budget(
    epoch_seconds: float | None,
    *,
    epochs: int,
    first_rung: int,
    time_left_s: float | None,
    budget_s: float | None,
    fastest_epoch_s: float | None = None,
    remaining: bool = False,
) -> BudgetVerdict:
    """Refuse a candidate whose first rung or whole schedule the budget cannot afford.

    Without a budget (no --timeout) nothing is refused. With one, a candidate is refused when
    its first rung would take more than FIRST_RUNG_SHARE of the whole budget (it would crowd out
    the others) and its epoch is over CHEAP_FACTOR x the fastest trained epoch (`fastest_epoch_s`:
    in a budget so small that every candidate is over the share, the cheap ones still train),
    or when its whole schedule cannot finish in the time left (a trial cut by the deadline is
    neither exportable nor finished: its epochs would be wasted). A re-run resuming a checkpoint
    gives the `epochs` and `first_rung` still ahead of it (`remaining`): a first rung already
    passed (0) is no longer judged.
    """
    if epoch_seconds is None or budget_s is None or time_left_s is None:
        return BudgetVerdict(epoch_seconds)
    rung_s = epoch_seconds * first_rung
    full_s = epoch_seconds * epochs
    cheap = fastest_epoch_s is not None and epoch_seconds <= CHEAP_FACTOR * fastest_epoch_s
    if first_rung > 0 and rung_s > FIRST_RUNG_SHARE * budget_s and not cheap:
        return BudgetVerdict(
            epoch_seconds,
            f"predicted {_seconds(rung_s)} to its first rung (epoch {first_rung}), more than "
            f"{FIRST_RUNG_SHARE:.0%} of the {_seconds(budget_s)} budget",
            late=full_s > time_left_s,  # near the end the time left would refuse it too
        )
    if full_s > time_left_s:
        epochs_said = count(epochs, "remaining epoch" if remaining else "epoch")
        return BudgetVerdict(
            epoch_seconds,
            f"predicted {_seconds(full_s)} for its {epochs_said}, more than the {_seconds(max(0.0, time_left_s))} left",
            late=True,
        )
    return BudgetVerdict(epoch_seconds)


def judge_first_epoch(
    epoch_seconds: float,
    trials: Iterable[Any],
    *,
    device: str,
    data: Any,
    epochs: int,
    budget_s: float | None,
    worker: str = "",
    threads: int | None = None,
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
    observed = observations_from(
        trials,
        device=device,
        train_images=len(data.train_y),
        val_images=len(data.val_y),
        worker=worker,
        threads=threads,
    )
    fastest = min((o.epoch_seconds for o in observed), default=None)
    if fastest is not None and epoch_seconds <= CHEAP_FACTOR * fastest:
        return ""
    return (
        f"{TOO_SLOW_FOR_BUDGET}its {count(epochs, 'epoch')} would take ~{_seconds(full_s)} at the measured "
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
    worker: str = "",
    threads: int | None = None,
) -> str:
    """Why a running trial should stop after `epoch`, "" to go on, from `seconds` measured over
    the `epochs_done` epochs this process trained: a fresh trial's first epoch against the budget
    (judge_first_epoch; `trials` is called only then), every epoch against the time left."""
    if epoch == 1 and epochs_done == 1:
        reason = judge_first_epoch(
            seconds,
            trials(),
            device=device,
            data=data,
            epochs=epochs,
            budget_s=budget_s,
            worker=worker,
            threads=threads,
        )
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
        f"{TOO_SLOW_FOR_TIME_LEFT}its {count(epochs_left, 'remaining epoch')} would take ~{_seconds(needed)} "
        f"at the measured {_seconds(pace)} per epoch, more than the {_seconds(max(0.0, time_left_s))} left"
    )


def _seconds(value: float) -> str:
    if value < 90:
        return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"
    if value < 5400:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


UNTRAINABLE_STREAK = 20  # candidates in a row that cannot train (infeasible, over budget) before a worker stops
# Too slow since the last start: for the time left (it only shrinks) UNTRAINABLE_STREAK stops a worker;
# for their share of the budget (a refusal that says nothing of the time left) only this many.
REFUSED_STREAK = 200


class BudgetGate:
    """One worker's budget rules, with its budget and how its trials are timed (`calibration`:
    observations_from's device, worker and threads): judges each candidate before it starts
    (judge_candidate) and each running trial after an epoch (judge_epoch), and counts the
    refusals since the last start, to say when to stop."""

    def __init__(self, *, pruner: str, objectives: int, budget_s: float | None) -> None:
        self.pruner = pruner if objectives == 1 or pruner == "none" else "pareto"
        self.budget_s = budget_s
        self.calibration: dict[str, Any] = {}
        self.too_slow_streak = self.refused_streak = 0  # too slow for the time left; too slow at all

    def judge(
        self,
        arch: Any,
        trials: Iterable[Any],
        data: Any,
        *,
        time_left_s: float | None,
        epochs_done: int = 0,
        first_rung: int | None = None,
    ) -> BudgetVerdict:
        verdict = judge_candidate(
            arch,
            trials,
            data=data,
            pruner=self.pruner,
            time_left_s=time_left_s,
            budget_s=self.budget_s,
            epochs_done=epochs_done,
            first_rung=first_rung if self.pruner == "hyperband" else None,  # not a Pareto search's
            **self.calibration,
        )
        if verdict.refused:
            self.too_slow_streak += verdict.late
            self.refused_streak += 1
        else:
            self.too_slow_streak = self.refused_streak = 0
        return verdict

    def judge_epoch(self, seconds: float, **measured: Any) -> str:
        """judge_epoch with this worker's budget and calibration; `measured`: its other arguments."""
        return judge_epoch(seconds, budget_s=self.budget_s, **self.calibration, **measured)

    def stop_message(self) -> str:
        """Why the worker stops asking ("" to go on): nothing the sampler offers fits the time left
        (UNTRAINABLE_STREAK refusals), or none fits its share of the budget (REFUSED_STREAK)."""
        if self.too_slow_streak >= UNTRAINABLE_STREAK or self.refused_streak >= REFUSED_STREAK:
            return f"stopping: the last {self.refused_streak} candidates were too slow"
        return ""
