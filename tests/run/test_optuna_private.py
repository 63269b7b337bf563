"""Pins every private Optuna name cnnsearch uses (all of them live in run/optuna_private.py)."""

from __future__ import annotations

import optuna

from cnnsearch.run import optuna_private


def test_private_names_still_exist_and_mean_what_we_use_them_for(tmp_path) -> None:
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_interval=60, grace_period=120)
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    trial.set_user_attr("outcome", "complete")
    assert optuna_private.storage_of(study).get_trial(optuna_private.trial_id(trial)).number == trial.number
    assert optuna_private.study_id(study) == study._study_id
    assert optuna_private.stored_user_attrs(trial) == {"outcome": "complete"}
    backend = optuna_private.rdb_heartbeat_backend(optuna_private.storage_of(study))
    assert hasattr(backend, "record_heartbeat")
    assert optuna_private.stale_trial_ids(optuna_private.storage_of(study), study) == []
    snapshot_base = optuna_private.journal_snapshot_base()
    assert snapshot_base is not object, "Optuna's journal snapshot base class moved: snapshots are off"
    assert hasattr(snapshot_base, "save_snapshot") and hasattr(snapshot_base, "load_snapshot")


def test_hyperband_first_rung_is_the_first_epoch_its_bracket_can_prune_at() -> None:
    """A trial reporting a hopeless accuracy among many good ones is pruned exactly at the first
    rung hyperband_first_rung names (the budget rules charge a candidate that many epochs)."""
    epochs = 10
    pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    study = optuna.create_study(study_name="hyperband", direction="maximize", pruner=pruner)  # brackets: by name
    for _ in range(40):  # good trials in every bracket, their rungs recorded as the pruner records them
        trial = study.ask()
        for step in range(1, epochs + 1):
            trial.report(0.9, step)
            trial.should_prune()
        study.tell(trial, 0.9)
    rungs = {}
    for _ in range(20):
        trial = study.ask()
        rung = optuna_private.hyperband_first_rung(study, trial)
        pruned_at = None
        for step in range(1, epochs + 1):
            trial.report(0.1, step)
            if trial.should_prune():
                pruned_at = step
                break
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        rungs[trial.number] = (rung, pruned_at)
    assert all(rung == pruned_at for rung, pruned_at in rungs.values()), rungs
    assert {rung for rung, _ in rungs.values()} == {1, 3, 9}, rungs  # every bracket was drawn
    assert optuna_private.hyperband_first_rung(optuna.create_study(), study.ask()) is None  # not Hyperband


def test_only_optuna_private_touches_private_optuna_names() -> None:
    import ast
    from pathlib import Path

    root = Path(optuna_private.__file__).resolve().parents[1]
    offenders = []
    for path in root.rglob("*.py"):
        if path.name == "optuna_private.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            if module and module.startswith("optuna") and any(part.startswith("_") for part in module.split(".")):
                offenders.append(f"{path.name}: from {module}")
            if isinstance(node, ast.Attribute) and node.attr in (
                "_storage",
                "_trial_id",
                "_study_id",
                "_cached_frozen_trial",
                "_get_stale_trial_ids",
                "_backend",
                "_pruners",
                "_try_initialization",
                "_get_bracket_id",
                "_min_resource",
                "_reduction_factor",
            ):
                offenders.append(f"{path.name}:{node.lineno} .{node.attr}")
    assert not offenders
