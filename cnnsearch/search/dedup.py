"""Owns "never trained twice" in a running search: the earlier trial a candidate repeats (same
network and training, by the architecture's canonical hash), and what a duplicate copies from it.

Knows outcomes and Optuna's public trial states; the worker records and tells.
"""

from __future__ import annotations

from typing import Any

from cnnsearch.outcomes import DUPLICATE_COPIES, TrialRecord

# Verdicts on the time left, not on the network: the same network may fit a later moment or a
# resumed run's new budget, so it is judged again, never copied.
NOT_COPIED = ("duplicate", "too_slow")


def duplicate_of(study: Any, trial: Any, arch_hash: str) -> Any:
    """The finished trial (COMPLETE or PRUNED, not itself a duplicate nor refused as too slow)
    with this hash, or None."""
    import optuna

    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    for other in study.get_trials(deepcopy=False, states=finished):
        record = TrialRecord.of(other)
        if other.number != trial.number and record.hash == arch_hash and record.outcome not in NOT_COPIED:
            return other
    return None


def copied_from(earlier: Any) -> tuple[dict[str, Any], str]:
    """What a duplicate of `earlier` records (its results, no training time) and why."""
    copied = TrialRecord.of(earlier).to_attrs(keys=DUPLICATE_COPIES)
    copied.update(train_seconds=0.0, images_per_sec=0.0, duplicate_of=earlier.number)
    return copied, f"same network and training as trial {earlier.number}; not retrained"
