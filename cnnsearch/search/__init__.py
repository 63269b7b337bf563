"""A search: settings and their parsing (`settings`), the sampler and pruner tables
(`strategies`), the swarm sampler (`pso`), the cost model (`cost`) and the budget rules
(`budget`), duplicates (`dedup`), creating, resuming, forking
and joining a run (`setup`), warm start
(`warm_start`), the worker loop (`worker`) and several worker processes (`parallel`).

Knows space, train, data and run. Never prints: progress leaves as events.

Public names are re-exported here and imported on first use (PEP 562), so importing the
package costs nothing until a name is needed.
"""

from __future__ import annotations

from cnnsearch._lazy import lazy_exports

_EXPORTS = {
    "worker_devices": "parallel",
    "resolve_workers": "parallel",
    "spawn_workers": "parallel",
    "joined_index": "parallel",
    "stop_with_parent": "parallel",
    "WorkerExit": "parallel",
    "run_workers": "parallel",
    "SearchEvent": "progress",
    "SearchSummary": "progress",
    "counted_trials": "progress",
    "summarize": "progress",
    "SearchSettings": "settings",
    "parse_duration": "settings",
    "parse_checkpoint_every": "settings",
    "parse_objective": "settings",
    "versions": "settings",
    "default_run_name": "settings",
    "command_line": "settings",
    "OpenedSearch": "setup",
    "open_search": "setup",
    "check_settings": "setup",
    "prepare_run": "setup",
    "fork_settings": "setup",
    "resolve_target": "setup",
    "publish_run": "setup",
    "join_run": "setup",
    "SwarmSampler": "pso",
    "quiet_optuna": "strategies",
    "check_sampler_installed": "strategies",
    "make_sampler": "strategies",
    "make_pruner": "strategies",
    "pareto_prune": "strategies",
    "optuna_log_to": "strategies",
    "warm_start_params": "warm_start",
    "read_warm_start": "warm_start",
    "warm_start_sources": "warm_start",
    "enqueue_warm_start": "warm_start",
    "enqueue_warm_start_for": "warm_start",
    "keep_best_weights": "weights",
    "WorkerLoop": "worker",
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
