"""Owns reading a study's trials once, into the plain facts every table, view and plot shows.

`TrialFacts` is what the leaderboard, `show`, the watch view and the report need of one trial:
its outcome (from the one vocabulary in `cnnsearch.outcomes`), its label, its numbers, and its
`TrialRecord`. A RUNNING trial whose worker is gone (`run.liveness.worker_alive`) reads as
"stopped".

Must not import torch or Lightning: it reads runs through `run` and `outcomes` only.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass, field
from typing import Any

from cnnsearch.outcomes import (
    RANKED,
    STOPPED_BY_TIMEOUT,
    TRAINED_TO_THE_END,
    TrialRecord,
    as_integer,
    as_number,
    group_of,
    trial_outcome,
)
from cnnsearch.run.folder import RunDir, RunInfo
from cnnsearch.run.liveness import worker_alive
from cnnsearch.spec import AugmentSettings, TrainSettings, known_fields

# A RUNNING trial whose worker is gone (e.g. SIGKILL): Optuna still says RUNNING until a search resumes it.
STOPPED_NOTE = "worker gone; resumes on the next search"


@dataclass
class TrialFacts:
    """What the report needs from one Optuna trial, read from its user attributes."""

    number: int
    outcome: str  # "complete", "pruned", ..., or "running"
    state: str  # label for tables: "failed: nan", "duplicate of #3"
    val_acc: float | None  # best validation accuracy, fraction 0..1
    params: int | None
    flops: int | None
    latency_ms: float | None
    train_s: float | None
    epochs: int | None  # epochs run (where a pruned trial stopped)
    arch: str  # the compact one-line form
    reason: str
    curve: list[float] = field(default_factory=list)  # validation accuracy per epoch
    values: tuple[float, ...] | None = None  # Optuna's objective values
    started: datetime.datetime | None = None
    finished: datetime.datetime | None = None
    record: TrialRecord = field(default_factory=TrialRecord)  # every attribute of the trial
    training: str = ""  # optimiser and augmentation in one line (training_compact)

    @property
    def ranked(self) -> bool:
        return self.outcome in RANKED and self.val_acc is not None


def trial_facts(
    trial: Any, *, accuracy_index: int = 0, epochs_budget: int | None = None, alive: bool = True
) -> TrialFacts:
    """Read one `optuna.trial.FrozenTrial` (or anything shaped like it) into `TrialFacts`.

    `alive=False` says the worker of a RUNNING trial is gone: its outcome becomes "stopped".
    """
    record = TrialRecord.of(trial)
    outcome = trial_outcome(trial)
    if outcome == "running" and not alive:
        outcome = "stopped"
    curve = list(record.val_acc)
    if not curve and trial.intermediate_values:
        curve = [as_number(trial.intermediate_values[step]) or math.nan for step in sorted(trial.intermediate_values)]
    val_acc = record.best_val_acc
    if val_acc is None and any(math.isfinite(value) for value in curve):
        val_acc = max(value for value in curve if math.isfinite(value))
    values = tuple(trial.values) if trial.values is not None else None
    if val_acc is None and values is not None and outcome in TRAINED_TO_THE_END and accuracy_index < len(values):
        val_acc = float(values[accuracy_index])
    reason = record.reason
    if outcome in ("running", "stopped"):
        current = record.current_epoch if record.current_epoch is not None else len(curve)
        total = arch_epochs(record) or epochs_budget
        epoch = f"epoch {current} of {total}" if total else f"epoch {current}"
        reason = f"training, {epoch}" if outcome == "running" else f"{STOPPED_NOTE} (it was at {epoch})"
    epochs = record.epochs_run if record.epochs_run is not None else record.current_epoch
    if epochs is None and curve:
        epochs = len(curve)
    return TrialFacts(
        number=trial.number,
        outcome=outcome,
        state=state_label(outcome, record),
        val_acc=val_acc,
        params=record.params,
        flops=record.flops,
        latency_ms=record.latency_ms,
        train_s=record.train_seconds,
        epochs=epochs,
        arch=record.compact,
        reason=reason,
        curve=curve,
        values=values,
        started=trial.datetime_start,
        finished=trial.datetime_complete,
        record=record,
        training=training_compact(record.arch),
    )


def state_label(outcome: str, record: TrialRecord) -> str:
    """How tables name an outcome: "duplicate of #3", "failed: nan", "over budget"."""
    if outcome == "duplicate":
        return f"duplicate of #{record.duplicate_of}" if record.duplicate_of is not None else "duplicate"
    if outcome in STOPPED_BY_TIMEOUT:
        return outcome  # ranked with its epochs: the epochs column says how far it got
    if group_of(outcome) == "failed" and outcome not in ("failed", "interrupted", "stopped"):
        return f"failed: {outcome}"
    return outcome.replace("_", " ")


def arch_epochs(record: TrialRecord) -> int | None:
    """The epochs budget written in the trial's architecture."""
    if isinstance(record.arch, dict):
        train = record.arch.get("train")
        return as_integer(train.get("epochs")) if isinstance(train, dict) else None
    return None


def study_facts(study: Any, info: RunInfo, *, run: RunDir | None = None, now: float | None = None) -> list[TrialFacts]:
    """Facts of every trial; with `run`, RUNNING trials whose worker is gone become "stopped"."""
    accuracy_index = info.objective.index("accuracy") if "accuracy" in info.objective else 0
    return [
        trial_facts(
            trial,
            accuracy_index=accuracy_index,
            epochs_budget=info.epochs,
            alive=run is None or trial.state.name != "RUNNING" or worker_alive(run, trial, now),
        )
        for trial in study.get_trials(deepcopy=False)
    ]


def _number_or_nan(value: Any) -> float:
    number = as_number(value)
    return math.nan if number is None else number


def training_compact(data: Any) -> str:
    """The training and augmentation of a candidate recorded as spec.Architecture.to_dict(), in one
    line for tables (`adamw lr3.4e-3 wd4.0e-4 b64 ls0.1 | shift1`), without rebuilding its
    layers; "" when there is no record."""
    if not isinstance(data, dict):
        return ""
    train_raw, augment_raw = data.get("train"), data.get("augment")
    try:
        train = TrainSettings(**known_fields(TrainSettings, train_raw if isinstance(train_raw, dict) else {})).compact()
        augment = AugmentSettings(
            **known_fields(AugmentSettings, augment_raw if isinstance(augment_raw, dict) else {})
        ).compact()
    except (TypeError, ValueError, ArithmeticError):  # a damaged record: the other columns still show
        return ""
    return f"{train} | {augment}" if augment else train
