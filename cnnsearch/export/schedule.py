"""Owns the final model's schedule: how many epochs the chosen architecture trains on
train+validation, and the progress it reports while it trains.

A search trains thousands of candidates briefly; the final model is one network, so by default
it trains DEFAULT_FINAL_FACTOR times the search's epochs (its one-cycle schedule stretched, not
repeated). `--final-epochs N` names the epochs; `--final-budget 5m` fits them to a time, from
the trial's own measured seconds per epoch scaled to the larger training set. A schedule fitted
to a budget is re-planned after the final training's first epochs, at their measured pace
(`FinalPacer`): the search's timing includes validation and ran beside other work, so the
prediction alone overestimated an hour-long run's final epochs (57.2 s planned, ~50 s run; bench/RESULTS.md).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cnnsearch.errors import UserError
from cnnsearch.outcomes import TrialRecord
from cnnsearch.words import count

DEFAULT_FINAL_FACTOR = 3  # final epochs = this x the search's epochs, by default
FINAL_SHARE = 0.3  # `search --timeout T --export DIR`: the share of T kept for the final model
FINAL_MARGIN_S = 10.0  # of that share, kept for testing once and writing the model files
MAX_BUDGET_FACTOR = 10  # --final-budget trains at most this x the search's epochs (more rarely helps)
# A trial timed with fewer CPU threads than the final training has (--workers N splits the cores)
# is credited this share of the linear speed-up: 2 threads ran the final epochs 1.9-2.0x faster than
# 1 (bench/RESULTS.md, --workers 2); less than all of it, since overrunning the budget is worse.
THREAD_GAIN_SHARE = 0.8
REPLAN_EPOCHS = 3  # a budget-fitted final training may grow or shrink after each of its first epochs
PACE_MARGIN = 1.03  # a re-plan budgets each epoch left at this x the measured pace (a later epoch may be slower)
FLOOR_OVERRUN_SHARE = 0.1  # the search's epochs are kept while they overrun by at most this share of the budget


@dataclass(frozen=True)
class FinalSchedule:
    """The final training's epochs and why."""

    epochs: int
    why: str  # e.g. "3x the search's 8 epochs"
    predicted_s: float | None = None  # predicted seconds of the whole final training; None: unknown
    fitted: bool = False  # fitted to a time budget: re-planned at the measured pace (FinalPacer)
    cap: int | None = None  # the most epochs a re-plan may reach
    floor: int = 1  # the fewest a re-plan may cut it to (the search's epochs, when it planned that many)


@dataclass(frozen=True)
class FinalProgress:
    """One finished epoch of the final training, for a progress bar."""

    epoch: int
    epochs: int
    loss: float  # mean training loss of the epoch
    elapsed_s: float
    left_s: float  # at the pace so far


def final_schedule(
    *,
    search_epochs: int,
    final_epochs: int | None,
    final_budget_s: float | None,
    search_epoch_s: float | None,
    search_images: int,
    final_images: int,
    search_threads: int | None = None,
    final_threads: int | None = None,
    at_least_one: bool = False,
) -> FinalSchedule:
    """The schedule of the final training; UserError when --final-budget cannot be met or judged.

    `search_epoch_s` is the trial's measured seconds per epoch on `search_images` training images
    (it includes the validation pass, which the final training does not run: a safe overestimate).
    `at_least_one` (search --export, when it has nothing else to export): a budget shorter than
    one epoch gets one whole epoch, its learning-rate schedule complete, rather than an error.
    """
    if final_epochs is not None and final_budget_s is not None:
        raise UserError("--final-epochs and --final-budget both set the final schedule; pass only one of them")
    if final_epochs is not None and final_epochs < 1:
        raise UserError(f"--final-epochs must be at least 1, but got {final_epochs}")
    epoch_s = None
    if search_epoch_s is not None and search_epoch_s > 0 and search_images > 0:
        epoch_s = search_epoch_s * final_images / search_images
        if epoch_s is not None and search_threads and final_threads and final_threads > search_threads:
            epoch_s /= 1 + THREAD_GAIN_SHARE * (final_threads / search_threads - 1)
    if final_epochs is not None:
        return FinalSchedule(final_epochs, f"--final-epochs {final_epochs}", _times(epoch_s, final_epochs))
    cap = MAX_BUDGET_FACTOR * search_epochs
    if final_budget_s is None:
        epochs = DEFAULT_FINAL_FACTOR * search_epochs
        return FinalSchedule(
            epochs, f"{DEFAULT_FINAL_FACTOR}x the search's {count(search_epochs, 'epoch')}", _times(epoch_s, epochs)
        )
    if epoch_s is None:
        raise UserError(
            "--final-budget needs the trial's measured time per epoch, which this trial does not have; "
            "pass --final-epochs instead"
        )
    fitting = math.floor(final_budget_s / epoch_s)
    if fitting < 1 and at_least_one:
        why = f"one epoch: the {_secs(final_budget_s)} s left is shorter than one (~{_secs(epoch_s)} s)"
        return FinalSchedule(1, why, _times(epoch_s, 1))
    if fitting < 1:
        raise UserError(
            f"--final-budget {_secs(final_budget_s)} s is shorter than one epoch of the final training "
            f"(~{epoch_s:.0f} s on {final_images} images); give at least {math.ceil(epoch_s)} s or pass --final-epochs"
        )
    epochs = min(fitting, cap)
    why = f"fits --final-budget {_secs(final_budget_s)} s at ~{epoch_s:.1f} s per epoch"
    if epochs == cap and fitting > cap:
        why += f" (capped at {MAX_BUDGET_FACTOR}x the search's {count(search_epochs, 'epoch')})"
    return FinalSchedule(epochs, why, _times(epoch_s, epochs), fitted=True, cap=cap, floor=min(epochs, search_epochs))


def unknown_pace_schedule(search_epochs: int) -> FinalSchedule:
    """The final schedule for a budget when the chosen trial has no measured pace: the most epochs
    a budget may buy, cut to what fits after the first epoch (FinalPacer)."""
    cap = MAX_BUDGET_FACTOR * search_epochs
    return FinalSchedule(cap, "as many as the time left allows", fitted=True, cap=cap, floor=1)


def _secs(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _times(epoch_s: float | None, epochs: int) -> float | None:
    return None if epoch_s is None else epoch_s * epochs


def schedule_for_trial(
    info: Any,
    trials: Sequence[Any],
    chosen: Any,
    final_epochs: int | None,
    final_budget_s: float | None,
    final_images: int,
    final_threads: int | None = None,
    *,
    at_least_one: bool = False,
) -> FinalSchedule:
    """The chosen trial's final schedule (`chosen`: export.choose's candidate; `info`: the run's
    RunInfo), from the trial's own measured time per epoch in the search (and the CPU threads it
    and the final training have: `final_threads`, None on a GPU); `at_least_one` as in final_schedule."""
    timed = TrialRecord.of(trials[chosen.weights_trial]) if chosen.weights_trial < len(trials) else None
    epoch_s = None
    if timed is not None and timed.train_seconds and timed.epochs_run:
        epoch_s = timed.train_seconds / timed.epochs_run
    return final_schedule(
        search_epochs=chosen.arch.train.epochs,
        final_epochs=final_epochs,
        final_budget_s=final_budget_s,
        search_epoch_s=epoch_s,
        search_images=int(info.split_sizes.get("train") or 0),
        final_images=final_images,
        search_threads=timed.threads if timed is not None else None,
        final_threads=final_threads,
        at_least_one=at_least_one,
    )


def schedule_or_none(
    info: Any, trials: Sequence[Any], candidate: Any, final_budget_s: float | None, pool: int, threads: int | None
) -> FinalSchedule | None:
    """schedule_for_trial fitted to `final_budget_s`, or None when not even one epoch fits or the
    trial's speed is unknown."""
    try:
        return schedule_for_trial(info, trials, candidate, None, final_budget_s, pool, threads)
    except UserError:
        return None


def last_resort_schedule(
    info: Any, trials: Sequence[Any], candidate: Any, final_budget_s: float | None, pool: int, threads: int | None
) -> FinalSchedule:
    """search --export with no weights to fall back on: one whole epoch when less than one fits,
    or, when the trial's speed is unknown, as many as the first epoch shows will fit."""
    try:
        return schedule_for_trial(info, trials, candidate, None, final_budget_s, pool, threads, at_least_one=True)
    except UserError:
        return unknown_pace_schedule(candidate.arch.train.epochs)


class FinalPacer:
    """Paces the final training: reports every epoch (FinalProgress) and, for a schedule fitted to
    a budget, re-plans its epochs at the measured pace so that the training ends by `deadline`
    (time.monotonic()). TrialControl's on_epoch_end and replan hooks.

    After each of the first REPLAN_EPOCHS the epochs may shrink, or grow while the learning rate
    still warms up (below), at the pace of the epochs after the first once there are any: the first
    carries one-off set-up (a 10-minute run's final training ran its first epoch at 4.9 s and
    the rest faster, and ended 28 s early). After that they only shrink, when the epochs left no
    longer fit at the slower of that pace and the last epoch's (in an hour-long run the later
    epochs ran ~7% slower than the first two, and the training overran by ~15 s).

    `warmup` is the share of the training's steps that warm the learning rate up (0: none). The
    schedule is a share of the planned steps, so more epochs move the training back along it: it
    grows only while the old plan is still warming up, where that is a dip in a rising rate, not
    a second warm-up after the rate has peaked. `clock` is time.monotonic (tests pass their own)."""

    def __init__(
        self,
        schedule: FinalSchedule,
        *,
        deadline: float | None,
        on_progress: Callable[[FinalProgress], None] | None = None,
        warmup: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.epochs = schedule.epochs
        self.schedule = schedule
        self.deadline = deadline if schedule.fitted else None
        self.on_progress = on_progress
        self.warmup = warmup
        self.clock = clock
        self.started = clock()
        self.durations: list[float] = []  # seconds of each epoch (from the calls' elapsed times)
        self.changes: list[tuple[int, int, int, float]] = []  # (after epoch, from, to, at s per epoch)

    def restart(self) -> None:
        """The training (re)starts from its first epoch (TrialControl.on_train_start): after an
        out-of-memory retry the epochs timed and re-planned before belong to the failed attempt,
        and the retry starts from the schedule's own epochs."""
        self.started = self.clock()
        self.durations.clear()
        self.epochs = self.schedule.epochs
        self.changes.clear()

    def replan(self, epoch: int, elapsed_s: float) -> int:
        """The epochs the training should run, after `epoch` finished `elapsed_s` into the training."""
        self.durations.append(max(0.0, elapsed_s - sum(self.durations)))
        steady = self.durations[1:] or self.durations  # the first epoch's set-up aside
        pace = sum(steady) / len(steady)
        if self.deadline is None or pace <= 0:
            return self.epochs
        left = self.deadline - self.clock()
        floor = max(epoch, min(self.epochs, self.schedule.floor))  # not below the search's epochs...
        # ...unless that overruns the deadline by more than an epoch or FLOOR_OVERRUN_SHARE of the
        # budget (a mis-predicted pace: another device, fewer threads, an OOM retry): unbounded before.
        allowed = max(pace, FLOOR_OVERRUN_SHARE * (self.deadline - self.started))
        floor = max(epoch, min(floor, epoch + math.floor((left + allowed) / pace)))
        if epoch <= REPLAN_EPOCHS:
            fitting = epoch + max(0, math.floor(left / (pace * PACE_MARGIN)))
            planned = max(floor, min(fitting, self.schedule.cap or fitting))
            if planned > self.epochs and self.warmup > 0 and epoch >= self.warmup * self.epochs:
                planned = self.epochs  # warmed up already: more epochs would warm it up again
        else:
            pace = max(pace, self.durations[-1])
            planned = max(floor, min(self.epochs, epoch + max(0, math.floor(left / pace))))
        if planned != self.epochs:
            self.changes.append((epoch, self.epochs, planned, pace))
            self.epochs = planned
        return self.epochs

    def on_epoch_end(self, epoch: int, loss: float) -> None:
        if self.on_progress is None:
            return
        elapsed = self.clock() - self.started
        pace = elapsed / max(1, epoch)
        self.on_progress(FinalProgress(epoch, self.epochs, loss, elapsed, pace * (self.epochs - epoch)))

    def note(self) -> str:
        """What the re-plans changed ('' when nothing): for the messages and model.json."""
        if not self.changes or self.changes[0][1] == self.changes[-1][2]:
            return ""
        steps = ", ".join(f"-> {to} after epoch {epoch} at {pace:.1f} s each" for epoch, _, to, pace in self.changes)
        return f"re-planned at the measured pace to end within the budget: {self.changes[0][1]} epochs {steps}"


def split_budget(total_s: float) -> tuple[float, float]:
    """`search --timeout T --export DIR`: (seconds for the search, seconds kept for the final model)."""
    final = FINAL_SHARE * total_s
    return total_s - final, final
