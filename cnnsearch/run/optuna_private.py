"""The only place that touches private Optuna names; tests/run/test_optuna_private.py pins each.

Optuna keeps a study's storage and a trial's id private, yet a worker that recovers a dead
worker's trial, beats a heartbeat or peeks at a trial's stored attributes needs them. Each use
is one small function here, so an Optuna upgrade that renames one fails one test, loudly,
instead of breaking a search in the middle of the night.
"""

from __future__ import annotations

from typing import Any


def journal_snapshot_base() -> type:
    """Optuna's base class of journal backends that keep snapshots (object when it has none).

    Imported on call: importing this module must not import Optuna (the leaderboard's start-up).
    """
    try:  # optional in Optuna: a journal backend that also keeps snapshots replays faster
        from optuna.storages.journal._base import BaseJournalSnapshot
    except ImportError:  # pragma: no cover - a future Optuna without it simply gets no snapshots
        return object
    return BaseJournalSnapshot


def storage_of(study: Any) -> Any:
    """The storage object a study reads and writes through."""
    return study._storage


def study_id(study: Any) -> int:
    return int(study._study_id)


def trial_id(trial: Any) -> int:
    """The storage's id of a trial (an `optuna.Trial` or a `FrozenTrial`)."""
    return int(trial._trial_id)


def stored_user_attrs(trial: Any) -> dict[str, Any]:
    """A running trial's user attributes as last written, without the deep copy `trial.user_attrs` makes."""
    return trial._cached_frozen_trial.user_attrs


def stale_trial_ids(storage: Any, study: Any) -> list[int]:
    """Ids of RUNNING trials whose RDB heartbeat is older than the storage's grace period."""
    return list(storage._get_stale_trial_ids(study._study_id))


def rdb_heartbeat_backend(storage: Any) -> Any:
    """The storage behind Optuna's caching wrapper (it has the heartbeat methods)."""
    return getattr(storage, "_backend", storage)


def hyperband_first_rung(study: Any, trial: Any) -> int | None:
    """The first step (epoch) at which the study's HyperbandPruner can stop `trial`: its bracket's
    min_resource x reduction_factor ** bracket, the bracket drawn from the trial's number (1, 3, 9...
    for min_resource 1 and factor 3); None when the pruner is not Hyperband or has no brackets yet
    (max_resource "auto" before a trial completes)."""
    import optuna

    pruner = study.pruner
    if not isinstance(pruner, optuna.pruners.HyperbandPruner):
        return None
    if len(pruner._pruners) == 0:  # as HyperbandPruner.prune does: initialising twice would add brackets
        pruner._try_initialization(study)
    if len(pruner._pruners) == 0:
        return None
    bracket = pruner._get_bracket_id(study, trial)
    return int(pruner._min_resource * pruner._reduction_factor**bracket)
