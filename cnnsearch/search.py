"""Owns a search: creating or resuming a run, the study, its sampler and pruner, and the
worker loop that asks for candidates, trains them and records every outcome.

Every finished trial is told to the study before the next one starts, and its record is
written atomically, so a run killed at any moment stays readable. A trial stopped by
Ctrl-C, the search deadline or a dead worker is re-run from its last finished epoch.

Knows space, train, data and the run folder. Never prints: progress reaches the caller
as `SearchEvent`s through a callback.
"""
from __future__ import annotations

import fcntl
import json
import os
import shlex
import socket
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from cnnsearch.errors import UserError
from cnnsearch.rundir import (
    RunDir,
    RunInfo,
    check_run_name,
    describe_storage,
    package_versions,
    rdb_storage,
    write_atomic,
)
from cnnsearch.space import SearchSpace, load_space, resolve_space_path, space_differences

SAMPLERS = ("tpe", "random", "gp", "cmaes", "nsga2")
PRUNERS = ("hyperband", "asha", "median", "none")
OBJECTIVES = ("accuracy", "params", "flops", "latency")
HEARTBEAT_INTERVAL_S = 5  # how often a worker says "still training"
HEARTBEAT_GRACE_S = 30  # silence after which a RUNNING trial's worker is taken for dead


@dataclass
class SearchSettings:
    """What the user asked for; validated by `prepare_run` before anything is written."""

    name: str
    space: str | None = None  # path of the space file; None = the run's saved copy on resume
    data: str | None = None  # --data spec; None = the run's on resume
    runs_dir: str = "runs"
    data_dir: str | None = None
    image_size: int | None = None
    subset: int | None = None
    trials: int | None = None  # requested total; None = the run's (or 20 for a new run)
    timeout_s: float | None = None  # whole search
    epochs: int | None = None
    trial_timeout_s: float | None = None
    # Settings that define a run: None = not given (a new run takes NEW_RUN_DEFAULTS, a resume
    # keeps the run's own; a given value that differs from the run's is refused).
    sampler: str | None = None
    pruner: str | None = None
    seed: int | None = None
    device: str = "auto"
    storage: str | None = None  # RDB URL; None = the local journal file
    objective: tuple[str, ...] | None = None
    val_fraction: float = 0.15
    keep_weights: int | None = None
    enqueue: tuple[str, ...] = ()  # architecture JSON files to train first
    from_run: str | None = None  # warm-start from another run's best trials
    fork: str | None = None  # start a new run warm-started from this one
    command: str = ""


DEFAULT_CHECKPOINT_EVERY_S = 30.0  # a killed trial resumes from at most this far back
NEW_RUN_DEFAULTS = {"sampler": "tpe", "pruner": "asha", "seed": 0, "objective": ("accuracy",), "keep_weights": 3}
# run.json field for each setting a resume must not change silently
RUN_DEFINING = {"sampler": "sampler", "pruner": "pruner", "seed": "seed", "objective": "objective",
                "keep_weights": "keep_weights", "subset": "subset", "image_size": "image_size",
                "data_dir": "data_dir", "trial_timeout_s": "trial_timeout"}


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


@dataclass
class SearchSummary:
    name: str
    counts: dict[str, int] = field(default_factory=dict)  # outcome -> trials
    best_trial: int | None = None
    best_val_acc: float | None = None
    best_compact: str = ""
    interrupted: bool = False
    elapsed_s: float = 0.0


# ---- parsing helpers used by the CLI -------------------------------------------------------
def parse_duration(text: str | None) -> float | None:
    """`90`, `90s`, `20m`, `2h`, `1h30m` -> seconds."""
    if text is None:
        return None
    import re

    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    cleaned = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", cleaned):
        seconds = float(cleaned)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", cleaned)
        if not parts or "".join(number + unit for number, unit in parts) != cleaned:
            raise UserError(f"cannot read the duration {text!r}; use e.g. 90s, 20m, 2h or 1h30m")
        seconds = sum(float(number) * units[unit] for number, unit in parts)
    if seconds <= 0:
        raise UserError(f"the duration {text!r} must be positive")
    return seconds


def parse_checkpoint_every(text: str | None) -> float:
    """`--checkpoint-every`: a duration, or `epoch` (0: after every epoch). Default 30 s."""
    if text is None:
        return DEFAULT_CHECKPOINT_EVERY_S
    if text.strip().lower() == "epoch":
        return 0.0
    try:
        return parse_duration(text)
    except UserError:
        raise UserError(f"--checkpoint-every {text!r} is not valid; use a duration such as 30s or 5m, "
                        f"or `epoch` to save after every epoch") from None


def parse_objective(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in names if name not in OBJECTIVES]
    if unknown or not names or names[0] != "accuracy" or len(set(names)) != len(names) or len(names) > 2:
        raise UserError(
            f"--objective {text!r} is not valid; use accuracy, or accuracy plus one cost: "
            f"accuracy,params  accuracy,flops  accuracy,latency"
        )
    return names


def versions() -> dict[str, str]:
    return package_versions(("cnnsearch", "torch", "optuna", "pytorch-lightning", "numpy"))


# ---- sampler and pruner -------------------------------------------------------------------------
def quiet_optuna() -> None:
    """Optuna's info logs and experimental-feature warnings are noise in our own progress view."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    # Our workers beat themselves (`Heartbeat`) around ask/tell; Optuna's hint is for optimize().
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


def make_sampler(name: str, seed: int, *, multi_objective: bool, worker_index: int = 0) -> Any:
    import optuna

    # Each worker gets its own stream: equal seeds would make all workers propose the same points.
    seed = seed + 7919 * worker_index
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, group=True, constant_liar=True, n_startup_trials=8,
        )
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    raise UserError(f"--sampler {name!r} is not valid; choose one of {', '.join(SAMPLERS)}")


def make_pruner(name: str, epochs: int) -> Any:
    import optuna

    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1), reduction_factor=3)
    if name == "asha":  # one bracket of successive halving: TPE learns from every trial, not a bracket's share
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=1)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UserError(f"--pruner {name!r} is not valid; choose one of {', '.join(PRUNERS)}")


# ---- creating and resuming a run -------------------------------------------------------------------
def prepare_run(settings: SearchSettings) -> tuple[RunDir, RunInfo, SearchSpace]:
    """Validate everything, then create the run (or check a resume matches it).

    Nothing is written until every check has passed: a bad option leaves no half run.
    """
    check_run_name(settings.name)
    quiet_optuna()
    if settings.trials is not None and settings.trials < 1:
        raise UserError(f"--trials must be at least 1, but got {settings.trials}")
    if settings.epochs is not None and settings.epochs < 1:
        raise UserError(f"--epochs must be at least 1, but got {settings.epochs}")
    if settings.keep_weights is not None and settings.keep_weights < 0:
        raise UserError(f"--keep-weights must be 0 or more, but got {settings.keep_weights}")
    if settings.subset is not None and settings.subset < 20:
        raise UserError(f"--subset must be at least 20 images, but got {settings.subset}")
    if settings.sampler is not None and settings.sampler not in SAMPLERS:
        raise UserError(f"--sampler {settings.sampler!r} is not valid; choose one of {', '.join(SAMPLERS)}")
    if settings.pruner is not None and settings.pruner not in PRUNERS:
        raise UserError(f"--pruner {settings.pruner!r} is not valid; choose one of {', '.join(PRUNERS)}")
    read_warm_start(settings)  # bad --enqueue files or --from-run are refused before anything is written
    run = RunDir(settings.runs_dir, settings.name)
    if run.exists():
        return _resume_run(run, settings)
    if settings.space is None:
        raise UserError(
            f"no run named {settings.name!r} in {settings.runs_dir}; to start it, pass --space FILE "
            f"(e.g. --space default, or search_spaces/default.toml)"
        )
    space = load_space(resolve_space_path(settings.space))
    return _create_run(run, settings, space)


def _resume_run(run: RunDir, settings: SearchSettings) -> tuple[RunDir, RunInfo, SearchSpace]:
    info = run.read_info()
    saved_space = load_space(run.space_file)
    differences: list[str] = []
    if settings.space is not None:
        new_space = load_space(resolve_space_path(settings.space))
        differences += space_differences(saved_space.raw, new_space.raw)
    if settings.data is not None and settings.data != info.data:
        differences.append(f"--data: {info.data!r} -> {settings.data!r}")
    if settings.storage is not None and settings.storage != info.storage:
        differences.append(f"--storage: {describe_storage(info.storage)} -> {describe_storage(settings.storage)}")
    if settings.epochs is not None and settings.epochs != info.epochs:
        differences.append(f"--epochs: {info.epochs or 'the space default'} -> {settings.epochs}")
    for setting, field_name in RUN_DEFINING.items():
        given = getattr(settings, setting)
        recorded = getattr(info, field_name)
        if setting == "objective" and given is not None:
            given, recorded = list(given), list(recorded)
        if given is not None and given != recorded:
            option = "--" + field_name.replace("_", "-")
            differences.append(f"{option}: {recorded!r} -> {given!r}")
    if differences:
        shown = "; ".join(differences[:4]) + ("; …" if len(differences) > 4 else "")
        raise UserError(
            f"run {run.name!r} was started with other settings ({shown}); resume it without them, "
            f"or start a new run from its trials with --fork NEW_NAME"
        )
    from cnnsearch.data import load_dataset_cached

    check_same_data(info, load_dataset_cached(info.data, data_dir=info.data_dir, image_size=info.image_size, seed=info.split_seed))
    return run, info, saved_space


def _create_run(run: RunDir, settings: SearchSettings, space: SearchSpace) -> tuple[RunDir, RunInfo, SearchSpace]:
    import optuna

    from cnnsearch.data import dataset_fingerprint, load_dataset_cached, make_split, save_split, subsample
    from cnnsearch.train import resolve_device

    if settings.data is None:
        raise UserError("--data is required for a new run (e.g. --data digits)")
    settings = SearchSettings(**{**settings.__dict__, **{key: value for key, value in NEW_RUN_DEFAULTS.items()
                                                         if getattr(settings, key) is None}})
    device = resolve_device(settings.device)
    dataset = load_dataset_cached(settings.data, data_dir=settings.data_dir, image_size=settings.image_size, seed=settings.seed)
    fingerprint = dataset_fingerprint(dataset)
    if settings.subset:
        dataset = subsample(dataset, settings.subset, seed=settings.seed)
    split = make_split(dataset.train_labels, val_fraction=settings.val_fraction, seed=settings.seed)
    storage_url = settings.storage or "journal"
    storage = rdb_storage(storage_url) if settings.storage else None  # reachability checked before writing
    info = RunInfo(
        name=run.name,
        data=settings.data,
        data_dir=settings.data_dir,
        image_size=settings.image_size,
        subset=settings.subset,
        input_shape=list(dataset.input_shape),
        class_names=list(dataset.class_names),
        data_fingerprint=fingerprint,
        split_seed=settings.seed,
        val_fraction=settings.val_fraction,
        split_sizes={"train": len(split.train_indices), "val": len(split.val_indices), "test": len(dataset.test_labels)},
        seed=settings.seed,
        storage=storage_url,
        sampler=settings.sampler,
        pruner=settings.pruner,
        objective=list(settings.objective),
        epochs=settings.epochs,
        trial_timeout=settings.trial_timeout_s,
        keep_weights=settings.keep_weights,
        command=settings.command,
        versions=versions(),
        device=str(device),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    run.path.mkdir(parents=True, exist_ok=True)
    write_atomic(run.space_file, resolve_space_path(settings.space).read_bytes())
    save_split(split, run.split_file)
    if storage is None:
        storage = run.open_storage(info)
    directions = ["maximize"] + ["minimize"] * (len(settings.objective) - 1)
    optuna.create_study(study_name=run.name, storage=storage, directions=directions, load_if_exists=True)
    run.write_info(info)  # last: a run exists once run.json does
    publish_run(run, info)
    return run, info, space


def fork_settings(settings: SearchSettings) -> SearchSettings:
    """A new run named by --fork, with the source run's settings where none were given."""
    source = RunDir(settings.runs_dir, settings.name)
    if not source.exists():
        raise UserError(f"--fork needs an existing run to start from, but there is no run {settings.name!r} in {settings.runs_dir}")
    if RunDir(settings.runs_dir, settings.fork).exists():
        raise UserError(f"run {settings.fork!r} already exists; choose another --fork name")
    info = source.read_info()
    inherited = {"data": info.data, "data_dir": info.data_dir, "image_size": info.image_size, "subset": info.subset,
                 "epochs": info.epochs, "trial_timeout_s": info.trial_timeout, "seed": info.seed,
                 "sampler": info.sampler, "pruner": info.pruner, "objective": tuple(info.objective),
                 "keep_weights": info.keep_weights, "space": str(source.space_file)}
    merged = {key: value for key, value in settings.__dict__.items()}
    for key, value in inherited.items():
        if merged.get(key) is None:
            merged[key] = value
    merged.update(name=settings.fork, fork=None, from_run=settings.name)
    if merged.get("trials") is None:
        merged["trials"] = source.load_study(info).user_attrs.get("target_trials")
    return SearchSettings(**merged)


# ---- warm start ---------------------------------------------------------------------------------------
def warm_start_params(space: SearchSpace, arch_dicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Optuna params that make `space.sample` give each architecture, where the space allows it."""
    from cnnsearch.spec import Architecture

    found = []
    for raw in arch_dicts:
        arch = Architecture.from_dict(raw)
        params = params_for(space, arch)
        if params is not None:
            found.append(params)
    return found


def params_for(space: SearchSpace, arch: Any) -> dict[str, Any] | None:
    """Find the parameter values that sample to `arch`, by replaying the space's questions."""
    recorder = _ParamRecorder(arch)
    try:
        sampled = space.sample(recorder, epochs=arch.train.epochs)
    except _NoMatch:
        return None
    return recorder.params if sampled.canonical_hash() == arch.with_epochs(sampled.train.epochs).canonical_hash() else None


class _NoMatch(Exception):
    pass


class _ParamRecorder:
    """A stand-in trial that answers each question with the value found in a given architecture."""

    def __init__(self, arch: Any) -> None:
        from cnnsearch.spec import ConvLayer, PoolLayer

        self.params: dict[str, Any] = {}
        convs = [layer for layer in arch.layers if isinstance(layer, ConvLayer)]
        stages: list[dict[str, Any]] = []
        current: dict[str, Any] | None = None
        for layer in arch.layers:
            if isinstance(layer, ConvLayer):
                # A stage ends at a pooling layer, or where the filters, kernel or stride change.
                if (current is None or current.get("pool") or layer.filters != current["filters"]
                        or layer.kernel_size != current["kernel_size"] or layer.stride != 1):
                    current = {"convs": 0, "filters": layer.filters, "kernel_size": layer.kernel_size,
                               "stride": layer.stride, "padding": layer.padding, "activation": layer.activation,
                               "batch_norm": layer.batch_norm, "pool": False}
                    stages.append(current)
                current["convs"] += 1
            elif isinstance(layer, PoolLayer) and current is not None:
                current.update(pool=True, pool_type=layer.pool_type, pool_window=layer.window, pool_stride=layer.stride)
        self.answers: dict[str, Any] = {"network.stages": len(stages)}
        for index, stage in enumerate(stages, start=1):
            for key, value in stage.items():
                self.answers[f"stage{index}.{key}"] = value
                self.answers.setdefault(f"network.{key}", value)
        if convs:
            self.answers["network.filters"] = convs[0].filters
            if len(stages) > 1:
                self.answers["network.width_multiplier"] = stages[1]["filters"] / stages[0]["filters"]
        head, train, augment = arch.head, arch.train, arch.augment
        self.answers.update({
            "head.pooling": head.pooling, "head.dense_layers": len(head.dense),
            "head.dense_units": head.dense[0] if head.dense else 0, "head.dropout": head.dropout,
            "head.activation": head.activation,
            **{f"train.{key}": getattr(train, key) for key in train.__dataclass_fields__},
            **{f"augment.{key}": getattr(augment, key) for key in augment.__dataclass_fields__},
        })

    def _answer(self, name: str) -> Any:
        if name not in self.answers:
            raise _NoMatch(name)
        self.params[name] = self.answers[name]
        return self.answers[name]

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        value = self._answer(name)
        for choice in choices:
            if choice == value:
                return choice
        raise _NoMatch(name)

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        value = self._answer(name)
        if not low <= value <= high:
            raise _NoMatch(name)
        return int(value)

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False) -> float:
        value = self._answer(name)
        if not low - 1e-12 <= value <= high + 1e-12:
            raise _NoMatch(name)
        return float(value)


def read_warm_start(settings: SearchSettings) -> list[dict[str, Any]]:
    """Architectures to train first, from --enqueue files and --from-run; bad input is refused."""
    import optuna

    arch_dicts: list[dict[str, Any]] = []
    for path in settings.enqueue:
        file = Path(path)
        if not file.is_file():
            raise UserError(f"--enqueue {path}: file not found; pass an architecture JSON (runs/NAME/trials/N.json or an export's model.json)")
        try:
            raw = json.loads(file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise UserError(f"--enqueue {path}: not valid JSON ({error})") from None
        # A trial record keeps it under "arch", an export's model.json under "architecture".
        found = next((raw[key] for key in ("arch", "architecture") if isinstance(raw, dict) and isinstance(raw.get(key), dict)), raw)
        if not isinstance(found, dict) or not isinstance(found.get("layers"), list):
            raise UserError(f"--enqueue {path}: no architecture in it; pass runs/NAME/trials/N.json or an export's model.json")
        arch_dicts.append(found)
    if settings.from_run:
        source = RunDir(settings.runs_dir, settings.from_run)
        source_study = source.load_study()
        ranked = [t for t in source_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                  if "arch" in t.user_attrs and t.user_attrs.get("outcome") == "complete"]
        ranked.sort(key=lambda t: t.values[0], reverse=True)
        arch_dicts += [t.user_attrs["arch"] for t in ranked[:10]]
    return arch_dicts


def enqueue_warm_start(study: Any, space: SearchSpace, settings: SearchSettings) -> list[str]:
    """Queue known candidates (from --enqueue files or --from-run) to be trained first."""
    arch_dicts = read_warm_start(settings)
    if not arch_dicts:
        return []
    params_list = warm_start_params(space, arch_dicts)
    for params in params_list:
        study.enqueue_trial(params, user_attrs={"warm_start": True}, skip_if_exists=True)
    skipped = len(arch_dicts) - len(params_list)
    return [f"queued {len(params_list)} known candidate(s) to train first"
            + (f"; {skipped} do not fit this space and were skipped" if skipped else "")]


# ---- the worker loop ------------------------------------------------------------------------------------
def counted_trials(study: Any) -> list[Any]:
    """Trials that count toward --trials: finished ones, but not those that will be re-run."""
    import optuna

    states = optuna.trial.TrialState
    return [t for t in study.get_trials(deepcopy=False)
            if t.state in (states.COMPLETE, states.PRUNED)
            or (t.state == states.FAIL and t.user_attrs.get("outcome") == "error")]


@contextmanager
def ask_lock(run: RunDir, storage_url: str) -> Iterator[None]:
    """Serialise "count, then ask" among workers so the requested total is exact.

    Local workers share the run folder, so a file lock serialises them. Workers on several
    machines share only the database: a PostgreSQL run takes an advisory lock there instead,
    keyed by the study name. A worker that dies holding it loses its connection, and with it
    the lock.
    """
    if storage_url.startswith("postgresql"):
        from sqlalchemy import text

        connection = _lock_connection(storage_url)
        key = {"key": advisory_lock_key(run.name)}
        connection.execute(text("SELECT pg_advisory_lock(:key)"), key)
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), key)
        return
    run.path.mkdir(parents=True, exist_ok=True)
    with open(run.path / ".ask.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_LOCK_CONNECTIONS: dict[str, Any] = {}  # storage URL -> this process's connection for ask_lock


def _lock_connection(storage_url: str) -> Any:
    """One database connection per worker process, opened on first use, kept for its lifetime."""
    if storage_url not in _LOCK_CONNECTIONS:
        import sqlalchemy

        from cnnsearch.rundir import engine_url

        engine = sqlalchemy.create_engine(engine_url(storage_url), poolclass=sqlalchemy.pool.NullPool,
                                          connect_args={"connect_timeout": 5})
        # Autocommit: an advisory lock belongs to the session, and no transaction is left open.
        _LOCK_CONNECTIONS[storage_url] = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    return _LOCK_CONNECTIONS[storage_url]


def advisory_lock_key(study_name: str) -> int:
    """A signed 64-bit key, the same on every machine (Python's hash() is salted per process)."""
    import hashlib

    return int.from_bytes(hashlib.sha256(study_name.encode()).digest()[:8], "big", signed=True)


class Heartbeat:
    """A thread that marks a trial alive; a RUNNING trial without one belongs to a dead worker."""

    def __init__(self, run: RunDir, study: Any, trial: Any) -> None:
        self.path = run.heartbeat_file(trial.number)
        self.storage = study._storage
        self.trial_id = trial._trial_id
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while True:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()
            if _uses_rdb_heartbeat(self.storage):
                try:
                    self.storage.record_heartbeat(self.trial_id)
                except Exception:  # a missed beat is retried; the grace period absorbs it
                    pass
            if self.stop_event.wait(HEARTBEAT_INTERVAL_S):
                return

    def __enter__(self) -> "Heartbeat":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join()
        self.path.unlink(missing_ok=True)


def _uses_rdb_heartbeat(storage: Any) -> bool:
    inner = getattr(storage, "_backend", storage)
    return hasattr(inner, "record_heartbeat") and getattr(inner, "heartbeat_interval", None) is not None


def _worker_alive(worker: str) -> bool | None:
    """True/False for a worker process on this machine; None when it runs elsewhere."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_dead_trials(run: RunDir, study: Any) -> list[int]:
    """Fail RUNNING trials whose worker is gone, and queue them to resume from their checkpoint.

    A worker on this machine is checked by its process id (a SIGKILL is seen at once); one
    elsewhere by its heartbeat (through the shared database, after a grace period).
    """
    import optuna

    now = time.time()
    recovered = []
    storage = study._storage
    rdb_heartbeat = _uses_rdb_heartbeat(storage)
    # Judged here rather than left to fail_stale_trials: that one sets FAIL first, after which
    # the trial's attributes (outcome, reason) can no longer be written.
    stale = set(storage._get_stale_trial_ids(study._study_id)) if rdb_heartbeat else set()
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        alive = _worker_alive(worker) if worker else True  # not yet claimed: judged by age alone
        beat = run.heartbeat_file(trial.number)
        if alive is None or (worker and alive and rdb_heartbeat and not beat.exists()):
            # Another machine's worker, or one here using another run folder (its heartbeat
            # file is not in ours): only the database heartbeat can tell.
            if trial._trial_id not in stale:
                continue
        else:
            started = trial.datetime_start.timestamp() if trial.datetime_start else now
            last_sign = beat.stat().st_mtime if beat.exists() else started
            if alive and now - last_sign < HEARTBEAT_GRACE_S:
                continue
        try:
            storage.set_trial_user_attr(trial._trial_id, "outcome", "interrupted")
            storage.set_trial_user_attr(trial._trial_id, "reason", "its worker stopped (killed or machine lost); re-run from its checkpoint")
            storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        except Exception:  # another worker recovered it first
            continue
        _requeue(study, trial)
        beat.unlink(missing_ok=True)
        recovered.append(trial.number)
    return recovered


def on_stale_trial(study: Any, trial: Any) -> None:
    """Optuna's RDB heartbeat failed a dead worker's trial: queue it again.

    Optuna sets FAIL before calling this, so the trial can no longer take attributes; the
    stale trials `recover_dead_trials` sees first also get outcome "interrupted" and a reason.
    """
    _requeue(study, trial)


def _requeue(study: Any, trial: Any) -> None:
    origin = trial.user_attrs.get("origin", trial.number)
    study.enqueue_trial(dict(trial.params), user_attrs={"origin": origin, "resume_of": trial.number})


class WorkerLoop:
    """One worker: asks for trials and trains them until the total, the deadline or a stop."""

    def __init__(self, run: RunDir, info: RunInfo, space: SearchSpace, *, target: int,
                 deadline: float | None = None, device: str = "auto", worker_index: int = 0,
                 on_event: Callable[[SearchEvent], None] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 checkpoint_every_s: float = DEFAULT_CHECKPOINT_EVERY_S) -> None:
        self.run = run
        self.info = info
        self.space = space
        self.target = target
        self.deadline = deadline
        self.device_name = device
        self.worker_index = worker_index
        self.on_event = on_event or (lambda event: None)
        self.should_stop = should_stop or (lambda: False)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.interrupted = False
        self.checkpoint_every_s = checkpoint_every_s  # training seconds a kill may lose at most

    def _emit(self, **fields: Any) -> None:
        self.on_event(SearchEvent(worker=self.worker, **fields))

    def open_study(self) -> Any:
        import optuna

        quiet_optuna()
        info = self.info
        if info.storage == "journal":
            storage = self.run.open_storage(info)
        else:
            storage = rdb_storage(info.storage, heartbeat_interval=HEARTBEAT_INTERVAL_S, grace_period=HEARTBEAT_GRACE_S,
                                  failed_trial_callback=on_stale_trial)
        epochs = info.epochs or self.space.dimension("train", "epochs").value or 10
        # A resumed run must not replay the first session's random proposals (they would all
        # be duplicates): the sampler's seed also depends on how many trials exist already.
        history = len(optuna.load_study(study_name=info.name, storage=storage).get_trials(deepcopy=False))
        return optuna.load_study(
            study_name=info.name,
            storage=storage,
            sampler=make_sampler(info.sampler, info.seed + 104729 * history, multi_objective=len(info.objective) > 1,
                                 worker_index=self.worker_index),
            pruner=make_pruner(info.pruner, epochs if isinstance(epochs, int) else 10),
        )

    def load_data(self) -> Any:
        from cnnsearch.data import load_dataset_cached, load_split, subsample, to_device
        from cnnsearch.train import resolve_device

        info = self.info
        dataset = load_dataset_cached(info.data, data_dir=info.data_dir, image_size=info.image_size, seed=info.split_seed)
        check_same_data(info, dataset)
        if info.subset:
            dataset = subsample(dataset, info.subset, seed=info.split_seed)
        split = load_split(self.run.split_file)
        self.device = resolve_device(self.device_name)
        return to_device(dataset, split, self.device)

    def run_loop(self) -> None:
        import optuna

        study = self.open_study()
        data = self.load_data()
        while not self.should_stop():
            if self.deadline is not None and time.monotonic() >= self.deadline:
                break
            with ask_lock(self.run, self.info.storage):
                recover_dead_trials(self.run, study)
                if _uses_rdb_heartbeat(study._storage):
                    optuna.storages.fail_stale_trials(study)
                running = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))
                if len(counted_trials(study)) + running >= self.target:
                    if running == 0:
                        break
                    trial = None
                else:
                    trial = study.ask()
            if trial is None:  # others are finishing the last trials; wait for them
                time.sleep(1.0)
                continue
            self.run_trial(study, trial, data)
            if self.interrupted:
                break

    def run_trial(self, study: Any, trial: Any, data: Any) -> None:
        from cnnsearch.train import TrialControl, train_candidate

        try:
            arch = self.space.sample(trial, epochs=self.info.epochs)
        except Exception as error:  # a sampler bug must not stop the search
            self._finish(study, trial, "error", f"sampling failed: {error}", {})
            return
        origin = trial.user_attrs.get("origin", trial.number)
        seed = self.info.seed + origin
        trial.set_user_attr("arch", arch.to_dict())
        trial.set_user_attr("compact", arch.compact())
        trial.set_user_attr("hash", arch.canonical_hash())
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("origin", origin)
        trial.set_user_attr("worker", self.worker)
        trial.set_user_attr("device", str(self.device))
        self._emit(kind="trial_start", trial=trial.number, compact=arch.compact(), epochs=arch.train.epochs, device=str(self.device))

        earlier = self._duplicate_of(study, trial, arch.canonical_hash())
        if earlier is not None:
            self._finish_duplicate(study, trial, earlier)
            return

        costs: dict[str, float] = {}

        def on_measured(measured: dict[str, float]) -> None:
            costs.update(measured)
            for key, value in measured.items():
                trial.set_user_attr(key, value)

        def on_epoch(epoch: int, accuracy: float) -> bool | str:
            self._emit(kind="epoch", trial=trial.number, compact=arch.compact(), epoch=epoch, epochs=arch.train.epochs, val_acc=accuracy)
            trial.set_user_attr("current_epoch", epoch)
            trial.set_user_attr("current_val_acc", accuracy)
            if len(self.info.objective) > 1:
                if self.info.pruner == "none":
                    return False
                cost_key = COST_ATTRS[self.info.objective[1]]
                return pareto_prune(study, trial.number, epoch, accuracy, cost_key, costs.get(cost_key)) or False
            trial.report(accuracy, epoch)
            return trial.should_prune()

        checkpoint = self.run.checkpoint_file(f"trial_{origin}")
        control = TrialControl(
            seed=seed,
            time_limit_s=self.info.trial_timeout,
            deadline=self.deadline,
            should_stop=self.should_stop,
            epoch_callback=on_epoch,
            on_measured=on_measured,
            checkpoint_path=checkpoint,
            checkpoint_every_s=self.checkpoint_every_s,
            measure_latency="latency" in self.info.objective,  # else ~3% of a short trial for a column
        )
        with Heartbeat(self.run, study, trial):
            try:
                result = train_candidate(arch, data, control=control, max_params=self.space.max_params,
                                         max_flops=self.space.max_flops)
            except Exception as error:  # a real bug: FAIL, recorded, and the search goes on
                import traceback

                self._finish(study, trial, "error", f"{type(error).__name__}: {error}",
                             {"traceback": traceback.format_exc(limit=6)})
                return
        metrics = result.metrics()
        if result.outcome == "interrupted":
            # Ctrl-C ends the command with 130; the search deadline is a normal end.
            self.interrupted = self.should_stop()
            self._finish(study, trial, "interrupted", result.reason, metrics)
            _requeue(study, study._storage.get_trial(trial._trial_id))
            return
        self._save_weights(study, trial, result)
        checkpoint.unlink(missing_ok=True)
        self._finish(study, trial, result.outcome, result.reason, metrics)

    def _duplicate_of(self, study: Any, trial: Any, arch_hash: str) -> Any:
        import optuna

        for other in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)):
            if other.number != trial.number and other.user_attrs.get("hash") == arch_hash and other.user_attrs.get("outcome") != "duplicate":
                return other
        return None

    def _finish_duplicate(self, study: Any, trial: Any, earlier: Any) -> None:
        import optuna

        copied = {key: earlier.user_attrs.get(key) for key in (
            "val_acc", "train_loss", "best_val_acc", "final_val_acc", "best_epoch", "epochs_run",
            "params", "flops", "latency_ms")}
        copied.update(train_seconds=0.0, images_per_sec=0.0, duplicate_of=earlier.number)
        reason = f"same network and training as trial {earlier.number}; not retrained"
        if earlier.state == optuna.trial.TrialState.COMPLETE:
            for key, value in copied.items():
                trial.set_user_attr(key, value)
            trial.set_user_attr("outcome", "duplicate")
            trial.set_user_attr("reason", reason)
            study.tell(trial, earlier.values if len(earlier.values) > 1 else earlier.value)
            self._emit(kind="trial_end", trial=trial.number, outcome="duplicate", reason=reason,
                       best_val_acc=copied["best_val_acc"], compact=earlier.user_attrs.get("compact", ""),
                       finished_total=len(counted_trials(study)))
        else:
            self._finish(study, trial, earlier.user_attrs.get("outcome", "pruned"), reason + f" ({earlier.user_attrs.get('reason', '')})", copied)

    def _save_weights(self, study: Any, trial: Any, result: Any) -> None:
        """Keep the weights of the best `keep_weights` trials only, so long searches fit on disk."""
        import torch

        if result.outcome != "complete" or result.model is None or self.info.keep_weights <= 0:
            return
        accuracy = result.best_val_acc or 0.0
        kept = sorted(self.run.path.glob("weights/trial_*.pt"))
        scores = []
        for path in kept:
            number = int(path.stem.split("_")[1])
            record = self.run.read_trial_record(number)
            scores.append(((record or {}).get("best_val_acc") or 0.0, path))
        scores.sort(key=lambda item: item[0], reverse=True)
        if len(scores) >= self.info.keep_weights and accuracy <= scores[self.info.keep_weights - 1][0]:
            return
        target = self.run.weights_file(trial.number)
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_suffix(".tmp")
        state = result.best_state if result.best_state is not None else result.model.state_dict()
        torch.save({"state_dict": state, "epoch": result.best_epoch or result.epochs_run}, temp)
        temp.replace(target)
        for _, path in scores[self.info.keep_weights - 1:]:
            path.unlink(missing_ok=True)

    def _finish(self, study: Any, trial: Any, outcome: str, reason: str, metrics: dict[str, Any]) -> None:
        """Record the outcome on the trial and in trials/<n>.json, then tell the study."""
        import optuna

        from cnnsearch.train import FAILED_OUTCOMES, PRUNED_OUTCOMES

        metrics = {**metrics, "outcome": outcome, "reason": reason}
        stored = trial._cached_frozen_trial.user_attrs  # read-only peek: no deep copy per key
        for key, value in metrics.items():
            if key not in stored or stored[key] != value:  # each write is a journal record
                trial.set_user_attr(key, value)
        record = {"trial": trial.number, "arch": trial.user_attrs.get("arch"), "params_sampled": trial.params, **metrics}
        write_atomic(self.run.trial_file(trial.number), json.dumps(record, indent=2, default=str) + "\n")
        best = metrics.get("best_val_acc")
        if outcome in PRUNED_OUTCOMES:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif outcome in FAILED_OUTCOMES or best is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, self._objective_values(metrics))
        self._emit(kind="trial_end", trial=trial.number, outcome=outcome, reason=reason, best_val_acc=best,
                   params=metrics.get("params") or 0, seconds=metrics.get("train_seconds") or 0.0,
                   compact=trial.user_attrs.get("compact", ""), finished_total=len(counted_trials(study)))

    def _objective_values(self, metrics: dict[str, Any]) -> float | list[float]:
        if len(self.info.objective) == 1:
            return float(metrics["best_val_acc"])
        return [float(metrics["best_val_acc"]), float(metrics[COST_ATTRS[self.info.objective[1]]])]


COST_ATTRS = {"params": "params", "flops": "flops", "latency": "latency_ms"}  # objective -> trial attr


def pareto_prune(study: Any, number: int, epoch: int, accuracy: float, cost_key: str, cost: float | None) -> str | None:
    """Multi-objective pruning: stop a trial that is dominated at the same epoch.

    Optuna refuses pruning in multi-objective studies because it compares whole value
    vectors. Here only accuracy is still being learned: the cost (params, FLOPs, latency)
    is known before epoch 1. So a trial can be judged like a single-objective one, against
    the finished trials that cost no more: if one of them was more accurate at this same
    epoch, this trial cannot join the front by the same route, and it is stopped.
    """
    import optuna

    if cost is None:
        return None
    for other in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        curve = other.user_attrs.get("val_acc") or []
        other_cost = other.user_attrs.get(cost_key)
        if other.number == number or other_cost is None or len(curve) < epoch:
            continue
        if other_cost <= cost and curve[epoch - 1] > accuracy:
            return f"dominated at epoch {epoch} by trial {other.number} ({curve[epoch - 1]:.2%} at {cost_key} {other_cost:,.4g} <= {cost:,.4g})"
    return None


def summarize(run: RunDir, *, interrupted: bool = False, elapsed_s: float = 0.0) -> SearchSummary:
    """Counts per outcome and the best trial so far."""
    study = run.load_study()
    summary = SearchSummary(name=run.name, interrupted=interrupted, elapsed_s=elapsed_s)
    for trial in study.get_trials(deepcopy=False):
        outcome = trial.user_attrs.get("outcome", trial.state.name.lower())
        summary.counts[outcome] = summary.counts.get(outcome, 0) + 1
        accuracy = trial.user_attrs.get("best_val_acc")
        if trial.state.name == "COMPLETE" and accuracy is not None and (summary.best_val_acc is None or accuracy > summary.best_val_acc):
            summary.best_trial, summary.best_val_acc = trial.number, accuracy
            summary.best_compact = trial.user_attrs.get("compact", "")
    return summary


def default_run_name(space_path: str) -> str:
    return f"{Path(space_path).stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def command_line() -> str:
    return shlex.join(["cnnsearch", *sys.argv[1:]])


DEFAULT_TRIALS = 20


def check_same_data(info: RunInfo, dataset: Any) -> None:
    """Refuse to go on when the data changed since the run started: the saved split would
    then point at other images, and the test share could overlap what was trained on."""
    from cnnsearch.data import dataset_fingerprint

    if info.data_fingerprint and dataset_fingerprint(dataset) != info.data_fingerprint:
        raise UserError(
            f"the data of run {info.name!r} ({info.data}) changed since the search started; its saved split "
            f"would pick other images; restore the data, or start a new run on the new data"
        )


def resolve_target(run: RunDir, info: RunInfo, trials: int | None) -> int:
    """The requested total: --trials, else the run's last target, else the default.

    The target is kept in the study so that every worker (and a resume) agrees on it.
    """
    study = run.load_study(info)
    target = trials or study.user_attrs.get("target_trials") or DEFAULT_TRIALS
    if study.user_attrs.get("target_trials") != target:
        study.set_user_attr("target_trials", int(target))
    return int(target)


def enqueue_warm_start_for(run: RunDir, space: SearchSpace, settings: SearchSettings) -> list[str]:
    if not settings.enqueue and not settings.from_run:
        return []
    return enqueue_warm_start(run.load_study(), space, settings)


def publish_run(run: RunDir, info: RunInfo) -> None:
    """Put run.json and the space into the study, so a worker on another machine can join."""
    study = run.load_study(info)
    if study.user_attrs.get("run_info") is None:
        study.set_user_attr("run_info", json.loads(info.to_json()))
        study.set_user_attr("space_toml", run.space_file.read_text())


def join_run(runs_dir: str | Path, name: str, storage: str | None) -> tuple[RunDir, RunInfo, SearchSpace]:
    """The run to work on: the local folder, or one rebuilt from a shared database's study."""
    import optuna

    from cnnsearch.data import load_dataset_cached, make_split, save_split, subsample

    run = RunDir(runs_dir, name)
    if run.exists():
        info = run.read_info()
        if storage is not None and storage != info.storage:
            raise UserError(f"run {name!r} here uses storage {describe_storage(info.storage)}, not {describe_storage(storage)}")
        return run, info, load_space(run.space_file)
    if storage is None:
        from cnnsearch.rundir import unknown_run_message

        raise UserError(unknown_run_message(Path(runs_dir), name) + "; to join a search on another machine pass --storage URL")
    quiet_optuna()
    try:
        study = optuna.load_study(study_name=name, storage=rdb_storage(storage))
    except KeyError:
        raise UserError(f"the storage {describe_storage(storage)} has no search named {name!r}; start it with `cnnsearch search --name {name} --storage URL`") from None
    raw = study.user_attrs.get("run_info")
    if raw is None:
        raise UserError(f"search {name!r} in {describe_storage(storage)} was not made by cnnsearch search; start it with `cnnsearch search`")
    info = RunInfo.from_dict(raw)
    info.storage = storage  # this machine's URL (host names may differ between machines)
    dataset = load_dataset_cached(info.data, data_dir=info.data_dir, image_size=info.image_size, seed=info.split_seed)
    check_same_data(info, dataset)
    if info.subset:
        dataset = subsample(dataset, info.subset, seed=info.split_seed)
    split = make_split(dataset.train_labels, val_fraction=info.val_fraction, seed=info.split_seed)
    if len(split.val_indices) != info.split_sizes.get("val"):
        raise UserError(f"the data for {info.data!r} on this machine differs from the search's ({info.split_sizes}); use the same dataset files")
    run.path.mkdir(parents=True, exist_ok=True)
    write_atomic(run.space_file, study.user_attrs["space_toml"])
    save_split(split, run.split_file)
    run.write_info(info)
    return run, info, load_space(run.space_file)
