"""Owns "never trained twice" in a running search: the earlier trial a candidate repeats (same
network and training, by the architecture's canonical hash), and what a duplicate copies from it.

Knows outcomes and Optuna's public trial states; the worker records and tells.
"""

from __future__ import annotations

from typing import Any

from cnnsearch.outcomes import DUPLICATE_COPIES, TrialRecord
from cnnsearch.search.budget import STOPPED_FOR_TIME

# A duplicate is a copy already (the trial it copies is found instead); too_slow, and a stop for
# the time (budget.STOPPED_FOR_TIME), are verdicts on the time left or the budget, not on the
# network: it may fit a later moment or a resumed run's new --timeout, so it is judged again.
NOT_COPIED = ("duplicate", "too_slow")


def duplicate_of(study: Any, trial: Any, arch_hash: str) -> Any:
    """The finished trial (COMPLETE or PRUNED, not itself a duplicate, nor refused or stopped
    for the time) with this hash, or None."""
    import optuna

    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    for other in study.get_trials(deepcopy=False, states=finished):
        record = TrialRecord.of(other)
        if other.number == trial.number or record.hash != arch_hash or record.outcome in NOT_COPIED:
            continue
        if not any(stop in record.reason for stop in STOPPED_FOR_TIME):
            return other
    return None


def copied_from(earlier: Any) -> tuple[dict[str, Any], str]:
    """What a duplicate of `earlier` records (its results, no training time) and why."""
    copied = TrialRecord.of(earlier).to_attrs(keys=DUPLICATE_COPIES)
    copied.update(train_seconds=0.0, images_per_sec=0.0, duplicate_of=earlier.number)
    return copied, f"same network and training as trial {earlier.number}; not retrained"
