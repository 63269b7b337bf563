"""Owns telling live workers from dead ones, and what follows from it.

A worker beats a heartbeat while it trains (a file in the run folder, plus the database's
heartbeat for shared RDB studies); the ask lock serialises "count, then ask" among workers so
a run's total is exact. A RUNNING trial is judged by ONE rule everywhere (`worker_alive`): by
process id when its worker runs on this machine, else by a heartbeat older than
`HEARTBEAT_GRACE_S`. `recover_dead_trials` ends a dead worker's trial as `interrupted` and
queues it again, to resume from its checkpoint.

Optuna's private names are reached through `run.optuna_private` only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cnnsearch.errors import RunFault
from cnnsearch.outcomes import TrialRecord
from cnnsearch.run.folder import RunDir
from cnnsearch.run.optuna_private import (
    rdb_heartbeat_backend,
    stale_trial_ids,
    storage_of,
    trial_id,
)

HEARTBEAT_INTERVAL_S = 5  # seconds between two beats of a training worker
# Seconds of silence after which a RUNNING trial's worker is taken for dead: six missed beats.
# The one threshold of the search, the leaderboard, `runs`, `show` and the watch view.
HEARTBEAT_GRACE_S = 30


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

        from cnnsearch.run.storage import engine_url

        engine = sqlalchemy.create_engine(
            engine_url(storage_url), poolclass=sqlalchemy.pool.NullPool, connect_args={"connect_timeout": 5}
        )
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
        self.storage = storage_of(study)
        self.trial_id = trial_id(trial)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def _beat_once(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        if uses_rdb_heartbeat(self.storage):
            # A missed beat is retried; the grace period absorbs it.
            with contextlib.suppress(Exception):
                self.storage.record_heartbeat(self.trial_id)

    def _beat(self) -> None:
        while not self.stop_event.wait(HEARTBEAT_INTERVAL_S):
            self._beat_once()

    def __enter__(self) -> Heartbeat:
        self._beat_once()  # the first beat before anything else happens to the trial
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join()
        self.path.unlink(missing_ok=True)


def uses_rdb_heartbeat(storage: Any) -> bool:
    """True for an RDB storage opened with a heartbeat interval (a shared multi-machine search)."""
    inner = rdb_heartbeat_backend(storage)
    return hasattr(inner, "record_heartbeat") and getattr(inner, "heartbeat_interval", None) is not None


def process_alive(worker: str) -> bool | None:
    """True/False for a worker process ("host:pid") on this machine; None when it runs elsewhere."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) <= 0:
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
    storage = storage_of(study)
    rdb_heartbeat = uses_rdb_heartbeat(storage)
    # Judged here rather than left to fail_stale_trials: that one sets FAIL first, after which
    # the trial's attributes (outcome, reason) can no longer be written.
    stale = set(stale_trial_ids(storage, study)) if rdb_heartbeat else set()
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        verdict = judge_worker(run, trial, now)
        beat = run.heartbeat_file(trial.number)
        if rdb_heartbeat and (verdict is None or not beat.exists()):
            # Another machine's worker, or one here using another run folder (its heartbeat
            # file is not in ours): only the database heartbeat can tell (machines may share a
            # host name, so a pid missing here proves nothing). A worker beats from the moment
            # it asks for a trial (search.worker), so every trial it took has a heartbeat row.
            if trial_id(trial) not in stale:
                continue
        elif verdict is not False:  # alive, or nothing here can tell
            continue
        try:
            number = trial_id(trial)
            storage.set_trial_user_attr(number, "outcome", "interrupted")
            storage.set_trial_user_attr(
                number, "reason", "its worker stopped (killed or machine lost); re-run from its checkpoint"
            )
            storage.set_trial_state_values(number, optuna.trial.TrialState.FAIL)
        except RunFault:  # a full disk or a damaged journal is not "recovered by another worker"
            raise
        except Exception:  # another worker recovered it first, or its own worker told it after all
            continue
        requeue(study, trial)  # a kill just before it: the sweep below queues it next time
        beat.unlink(missing_ok=True)
        recovered.append(trial.number)
    # An interrupted trial told FAIL before its re-run was queued (a kill in between) would be
    # lost for good: queue it now. (Queuing first instead could leave a re-run of a trial its own
    # worker told COMPLETE after all, which would then count as a duplicate.)
    failed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
    lost = [trial for trial in failed if TrialRecord.of(trial).outcome == "interrupted"]
    if lost:
        resumed = resumed_trials(study)
        recovered += [trial.number for trial in lost if requeue(study, trial, resumed)]
    return recovered


def requeue_refused(study: Any, session_started: float) -> list[int]:
    """Queue again the re-runs and starters an earlier session (one that ended before the Unix
    time `session_started`) refused as too slow: the sampler never proposes them again, so a
    checkpoint's epochs or a starter were lost for good, though a resumed run's new --timeout may
    well fit them. Called when a worker starts; this session's own refusals stay refused."""
    import optuna

    resumed = resumed_trials(study)
    queued = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,)):
        record = TrialRecord.of(trial)
        earlier = trial.datetime_complete is not None and trial.datetime_complete.timestamp() < session_started
        queued_only = record.resume_of is not None or record.starter is not None  # never proposed again
        if earlier and record.outcome == "too_slow" and queued_only and requeue(study, trial, resumed):
            queued.append(trial.number)
    return queued


def on_stale_trial(study: Any, trial: Any) -> None:
    """Optuna's RDB heartbeat failed a dead worker's trial: queue it again.

    Optuna sets FAIL before calling this, so the trial can no longer take attributes; the
    stale trials `recover_dead_trials` sees first also get outcome "interrupted" and a reason.
    """
    requeue(study, trial)


def resumed_trials(study: Any) -> set[int]:
    """The numbers of the trials a re-run has been queued for."""
    return {number for t in study.get_trials(deepcopy=False) if (number := TrialRecord.of(t).resume_of) is not None}


def requeue(study: Any, trial: Any, resumed: set[int] | None = None) -> bool:
    """Queue a trial's parameters again, to resume from the checkpoint of its origin; False (and
    nothing queued) when a re-run of it is queued already (`resumed`: resumed_trials(study), kept
    up to date here, for callers that queue several). Called under the ask lock, so that the
    check and the queuing are one step against recover_dead_trials' sweep."""
    resumed = resumed_trials(study) if resumed is None else resumed
    if trial.number in resumed:
        return False
    resumed.add(trial.number)
    record = TrialRecord.of(trial)
    origin = trial.number if record.origin is None else record.origin
    attrs: dict[str, Any] = {"origin": origin, "resume_of": trial.number}
    if record.starter is not None:  # a re-run starter is still a starter: trained to the end
        attrs["starter"] = record.starter
    if record.warm_start:
        attrs["warm_start"] = True
    study.enqueue_trial(dict(trial.params), user_attrs=attrs)
    return True


def heartbeat_age(run: RunDir, number: int, now: float) -> float | None:
    """Seconds since the worker training trial `number` last touched its heartbeat file."""
    try:
        return now - run.heartbeat_file(number).stat().st_mtime
    except OSError:
        return None


def judge_worker(run: RunDir, trial: Any, now: float | None = None) -> bool | None:
    """Whether the worker of a RUNNING trial still runs: the ONE rule of the search, the
    leaderboard, `runs`, `show` and the watch view.

    A worker process on this machine that is gone is dead at once (a SIGKILL shows at once).
    Otherwise its heartbeat file decides: fresh when younger than HEARTBEAT_GRACE_S (a trial
    not beating yet counts from its start). None: a worker elsewhere whose heartbeat file this
    run folder lacks (another run folder and a shared database), which only the database can judge.
    """
    now = time.time() if now is None else now
    worker = TrialRecord.of(trial).worker
    process = process_alive(worker) if worker else True  # not yet claimed: judged by age alone
    if process is False:
        return False
    age = heartbeat_age(run, trial.number, now)
    if age is None:
        if process is None:
            return None
        started = trial.datetime_start.timestamp() if trial.datetime_start else now
        age = now - started
    return age < HEARTBEAT_GRACE_S


def worker_alive(run: RunDir, trial: Any, now: float | None = None) -> bool:
    """`judge_worker`, with a worker that cannot be judged from here counted as alive."""
    return judge_worker(run, trial, now) is not False
