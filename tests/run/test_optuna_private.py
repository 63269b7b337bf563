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
            ):
                offenders.append(f"{path.name}:{node.lineno} .{node.attr}")
    assert not offenders
