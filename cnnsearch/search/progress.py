"""Owns what a search reports while it runs and when it ends: the events a worker sends to a
view (`SearchEvent`), the trials that count toward --trials, and the end-of-search summary.

Reads the study through `outcomes` only; knows nothing of training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cnnsearch.outcomes import OUTCOMES, best_so_far, trial_outcome
from cnnsearch.run.folder import RunDir


@dataclass
class SearchEvent:
    """One thing that happened, for the live view: `kind` says which fields are set."""

    kind: str  # "trial_start", "epoch", "trial_end", "message"
    trial: int = -1
    compact: str = ""
    epoch: int = 0
    epochs: int = 0
    val_acc: float | None = None
    outcome: str = ""
    reason: str = ""
    best_val_acc: float | None = None
    params: int = 0
    seconds: float = 0.0
    worker: str = ""
    device: str = ""
    text: str = ""
    finished_total: int | None = None  # trials counted toward --trials, all workers included
    predicted_s: float | None = None  # trial_start: the cost model's seconds for the whole schedule


@dataclass
class SearchSummary:
    name: str
    counts: dict[str, int] = field(default_factory=dict)  # outcome -> trials
    best_trial: int | None = None
    best_val_acc: float | None = None
    best_compact: str = ""
    interrupted: bool = False
    elapsed_s: float = 0.0


def counted_trials(study: Any) -> list[Any]:
    """Trials that count toward --trials: finished ones, but not those that will be re-run."""
    import optuna

    states = optuna.trial.TrialState

    def counts(trial: Any) -> bool:
        known = OUTCOMES.get(trial_outcome(trial))
        if trial.state == states.COMPLETE:
            return True
        if trial.state == states.PRUNED:  # too_slow: never trained, the sampler proposes another
            return known is None or known.counted
        # FAIL: cnnsearch's own errors count; an interrupted trial (re-run) or one Optuna failed does not
        return trial.state == states.FAIL and known is not None and known.counted

    return [t for t in study.get_trials(deepcopy=False) if counts(t)]


def summarize(run: RunDir, *, interrupted: bool = False, elapsed_s: float = 0.0) -> SearchSummary:
    """Counts per outcome and the best trial so far."""
    study = run.load_study()
    summary = SearchSummary(name=run.name, interrupted=interrupted, elapsed_s=elapsed_s)
    trials = study.get_trials(deepcopy=False)
    for trial in trials:
        outcome = trial_outcome(trial)
        summary.counts[outcome] = summary.counts.get(outcome, 0) + 1
    best = best_so_far(trials)
    if best is not None:
        summary.best_trial, summary.best_val_acc, summary.best_compact = best[:3]
    return summary
