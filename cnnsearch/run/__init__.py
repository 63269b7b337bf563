"""The run folder and its study: paths, run.json and atomic writes (`folder`), storages
(`storage`), the local journal (`journal`), worker liveness, heartbeats and the ask lock
(`liveness`), and the one module that touches private Optuna names (`optuna_private`).

Importable from anywhere; imports nothing above it, and never torch or Lightning.

Public names are re-exported here and imported on first use (PEP 562), so importing the
package costs nothing until a name is needed.
"""

from __future__ import annotations

from cnnsearch._lazy import lazy_exports

_EXPORTS = {
    "RunInfo": "folder",
    "package_versions": "folder",
    "user_file_mode": "folder",
    "honour_umask": "folder",
    "write_atomic": "folder",
    "check_runs_dir": "folder",
    "unwritable": "folder",
    "RunDir": "folder",
    "find_trial": "folder",
    "unknown_run_message": "folder",
    "list_run_names": "folder",
    "check_run_name": "folder",
    "needs_fsync": "journal",
    "complete_length": "journal",
    "RunJournal": "journal",
    "ask_lock": "liveness",
    "advisory_lock_key": "liveness",
    "Heartbeat": "liveness",
    "uses_rdb_heartbeat": "liveness",
    "process_alive": "liveness",
    "recover_dead_trials": "liveness",
    "on_stale_trial": "liveness",
    "requeue": "liveness",
    "requeue_refused": "liveness",
    "heartbeat_age": "liveness",
    "judge_worker": "liveness",
    "worker_alive": "liveness",
    "open_storage": "storage",
    "rdb_storage": "storage",
    "engine_url": "storage",
    "describe_storage": "storage",
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
