"""Owns the one vocabulary of how a trial can end, and the typed record of a trial.

Every trial ends with one `Outcome`. Each outcome has the Optuna state it is told to the study
with, a group (trained / skipped / failed) that every count in the CLI, the live view and the
report uses, and the phrase that says it in a sentence. PRUNED is chosen on purpose for
candidates that cannot win (infeasible, over budget, OOM, NaN, timeout): Optuna's TPE learns
from pruned trials and ignores failed ones. FAIL is for real errors and interruptions.

`TrialRecord` is the one reader and writer of a trial's user attributes: nobody else touches
`user_attrs` by key (Optuna's `FrozenTrial` plays this role for Optuna itself). Reading is
tolerant (a missing or damaged value reads as None), so a run written by an older cnnsearch, or
a trial whose worker died half way, still shows.

Imports nothing above it: pure Python, no Optuna, no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar


@dataclass(frozen=True)
class Outcome:
    """One way a trial can end."""

    name: str  # stored in the trial's "outcome" attribute
    state: str  # Optuna TrialState name it is told with: COMPLETE, PRUNED or FAIL
    group: str  # "trained", "skipped" (never trained) or "failed"
    phrase: str  # "trial 3 <phrase>"
    counted: bool = True  # counts toward --trials (False: it never trained, or it will be re-run)


# Every recorded outcome, in the order tables list them.
OUTCOMES: dict[str, Outcome] = {
    outcome.name: outcome
    for outcome in (
        Outcome("complete", "COMPLETE", "trained", "trained to the end"),
        Outcome("duplicate", "COMPLETE", "trained", "repeats an earlier trial and was not retrained"),
        Outcome("pruned", "PRUNED", "trained", "was pruned"),
        Outcome("infeasible", "PRUNED", "skipped", "could not be built for the data"),
        Outcome("over_budget", "PRUNED", "skipped", "was over the budget"),
        # Predicted (by the cost model) not to fit the time left of a --timeout: never trained, and
        # not counted toward --trials (the sampler proposes another); PRUNED so TPE leaves the region.
        Outcome("too_slow", "PRUNED", "skipped", "was predicted too slow for the time budget", counted=False),
        Outcome("oom", "PRUNED", "failed", "ran out of device memory"),
        Outcome("nan", "PRUNED", "failed", "diverged (NaN loss)"),
        Outcome("timeout", "PRUNED", "failed", "timed out"),
        Outcome("error", "FAIL", "failed", "failed with an error"),
        Outcome("interrupted", "FAIL", "failed", "was interrupted", counted=False),
    )
}
GROUPS = ("trained", "skipped", "failed")
TRAINED_TO_THE_END = ("complete", "duplicate")  # full schedule: may be exported, sits on Pareto fronts
# Stopped by --trial-timeout after some epochs: those epochs and their weights are real, so the
# leaderboard ranks it (after the trained trials) and export may choose it; still PRUNED for TPE.
STOPPED_BY_TIMEOUT = ("timeout",)
EXPORTABLE = TRAINED_TO_THE_END + STOPPED_BY_TIMEOUT
SHOWN_BY_DEFAULT = EXPORTABLE  # the leaderboard's rows without --all
RANKED = ("complete", "duplicate", "timeout", "pruned")  # have a validation accuracy worth ranking
# Why a ranked trial that did not run its whole schedule is on the leaderboard, said under the table.
RANKED_NOTES = {
    "timeout": "timeout: stopped by --trial-timeout; ranked by the epochs it ran, after the trained trials",
    "pruned": "pruned: stopped early by the pruner; ranked by the epochs it ran, after the others",
}
# What a trial shows when it has no outcome of its own: it is still running or waiting, its
# worker is gone ("stopped"), or Optuna failed it without cnnsearch's word ("failed").
STATE_OUTCOMES = {
    "COMPLETE": "complete",
    "PRUNED": "pruned",
    "FAIL": "failed",
    "RUNNING": "running",
    "WAITING": "waiting",
}
UNRECORDED_PHRASES = {
    "failed": "failed",
    "running": "is still running",
    "waiting": "is waiting to run",
    "stopped": "was stopped when its worker died",
}


def group_of(outcome: str) -> str:
    """trained, skipped or failed; "failed" for `failed`/`stopped`; "" for running and waiting."""
    known = OUTCOMES.get(outcome)
    if known is not None:
        return known.group
    return "failed" if outcome in ("failed", "stopped") else ""


def phrase_of(outcome: str) -> str:
    known = OUTCOMES.get(outcome)
    return known.phrase if known is not None else UNRECORDED_PHRASES.get(outcome, outcome.replace("_", " "))


def optuna_state(outcome: str) -> str:
    """The TrialState name a trial ending with `outcome` is told with."""
    return OUTCOMES[outcome].state


def count_groups(outcomes: list[str]) -> dict[str, int]:
    """{"trained": n, "skipped": n, "failed": n} for a list of outcome names (others ignored)."""
    counts = dict.fromkeys(GROUPS, 0)
    for outcome in outcomes:
        group = group_of(outcome)
        if group in counts:
            counts[group] += 1
    return counts


def as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def as_integer(value: Any) -> int | None:
    number = as_number(value)
    return int(number) if number is not None else None


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _floats(value: Any) -> list[float]:
    if not isinstance(value, (list, tuple)):
        return []
    return [math.nan if (number := as_number(item)) is None else number for item in value]


@dataclass
class TrialRecord:
    """A trial's user attributes, typed. `TrialRecord.of(trial)` reads; `write` and `write_metrics` write.

    Keys are the field names (the attribute names stored in the study and in trials/<n>.json).
    """

    outcome: str | None = None  # an OUTCOMES name, once the trial ended
    reason: str = ""  # why it ended so, in words
    arch: dict[str, Any] | None = None  # Architecture.to_dict()
    compact: str = ""  # the one-line form of the architecture
    hash: str = ""  # canonical hash of architecture + training: equal hashes, equal trainings
    seed: int | None = None  # training seed
    origin: int | None = None  # the trial whose seed and checkpoint a re-run continues
    resume_of: int | None = None  # the interrupted trial this one re-runs
    warm_start: bool = False  # queued by --enqueue / --from-run
    starter: int | None = None  # queued as the space's [[starter]] number N (1-based)
    worker: str = ""  # host:pid of the worker that trained it
    device: str = ""
    val_acc: list[float] = field(default_factory=list)  # validation accuracy per finished epoch
    val_correct: str = ""  # the best epoch's right/wrong per validation image, packed (results.noise)
    train_loss: list[float] = field(default_factory=list)  # mean training loss per finished epoch
    best_val_acc: float | None = None
    final_val_acc: float | None = None
    best_epoch: int | None = None
    epochs_run: int | None = None
    train_seconds: float | None = None
    images_per_sec: float | None = None
    params: int | None = None
    flops: int | None = None
    threads: int | None = None  # torch CPU threads the trial trained with; None on a GPU
    predicted_epoch_s: float | None = None  # the cost model's seconds per epoch before training; None: not predicted
    latency_ms: float | None = None  # one batch of min(batch size, 256) images; None: not measured
    micro_batch: int | None = None  # < batch size when OOM forced gradient accumulation
    current_epoch: int | None = None  # while running: the last finished epoch
    current_val_acc: float | None = None
    duplicate_of: int | None = None  # a duplicate: the trial whose training it repeats
    traceback: str = ""  # an error's last frames

    _READERS: ClassVar[dict[str, Any]] = {}

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> TrialRecord:
        """Read a user-attribute dict; missing or ill-typed values read as the field's default."""
        record = cls()
        readers = cls._readers()
        for key, value in attrs.items():
            reader = readers.get(key)
            if reader is not None and value is not None:
                setattr(record, key, reader(value))
        return record

    @classmethod
    def of(cls, trial: Any) -> TrialRecord:
        """The record of an Optuna trial (FrozenTrial or Trial)."""
        return cls.from_attrs(trial.user_attrs)

    @classmethod
    def _readers(cls) -> dict[str, Any]:
        if not cls._READERS:
            kinds = {
                "str | None": lambda v: v if isinstance(v, str) else None,
                "str": _text,
                "int | None": as_integer,
                "float | None": as_number,
                "list[float]": _floats,
                "bool": bool,
                "dict[str, Any] | None": lambda v: v if isinstance(v, dict) else None,
            }
            cls._READERS.update({item.name: kinds[str(item.type)] for item in fields(cls)})
        return cls._READERS

    def to_attrs(self, *, keys: tuple[str, ...] | None = None) -> dict[str, Any]:
        names = keys if keys is not None else tuple(item.name for item in fields(self))
        return {name: getattr(self, name) for name in names}


# What a duplicate copies from the trial whose training it repeats (its own time is 0).
DUPLICATE_COPIES = (
    "val_acc",
    "val_correct",
    "train_loss",
    "best_val_acc",
    "final_val_acc",
    "best_epoch",
    "epochs_run",
    "params",
    "flops",
    "latency_ms",
)
RECORD_KEYS = tuple(item.name for item in fields(TrialRecord))


def write_attrs(trial: Any, values: dict[str, Any], *, stored: dict[str, Any] | None = None) -> None:
    """Set user attributes on a running Optuna trial, skipping the ones already stored unchanged
    (each write is a journal record). Keys must be TrialRecord fields."""
    unknown = [key for key in values if key not in RECORD_KEYS]
    if unknown:
        raise KeyError(f"not TrialRecord attributes: {', '.join(unknown)}")
    for key, value in values.items():
        if stored is None or key not in stored or stored[key] != value:
            trial.set_user_attr(key, value)


def trial_outcome(trial: Any) -> str:
    """A trial's outcome; Optuna's state (running, waiting, failed, ...) when it has none (yet)."""
    state = trial.state.name
    if state in ("RUNNING", "WAITING"):
        return STATE_OUTCOMES[state]
    recorded = trial.user_attrs.get("outcome")
    return str(recorded) if recorded else STATE_OUTCOMES.get(state, state.lower())


def rank_key(accuracy: float, params: int | None, number: int) -> tuple[float, float, int]:
    """How finished trials rank (lower first): the higher validation accuracy, then fewer
    parameters (unknown: never the cheaper), then the lower number. The leaderboard's and
    export's order (export.choose), and the live view's "best so far", so that all three name
    the same trial on an exact tie."""
    return (-accuracy, float(params) if params is not None else math.inf, number)


def best_so_far(trials: Any) -> tuple[int, float, str, int | None] | None:
    """(number, best validation accuracy, compact form, params) of the best COMPLETE trial by `rank_key`
    (a tie: fewer parameters, then the earlier trial).

    The one "best so far" of the search summary, the live view and the worker lines.
    """
    best: tuple[tuple[float, float, int], tuple[int, float, str, int | None]] | None = None
    for trial in trials:
        if trial.state.name != "COMPLETE":
            continue
        accuracy = as_number(trial.user_attrs.get("best_val_acc"))
        if accuracy is None:
            continue
        number = as_number(trial.user_attrs.get("params"))
        params = int(number) if number is not None else None
        key = rank_key(accuracy, params, trial.number)
        if best is None or key < best[0]:
            best = (key, (trial.number, accuracy, str(trial.user_attrs.get("compact", "")), params))
    return best[1] if best is not None else None
