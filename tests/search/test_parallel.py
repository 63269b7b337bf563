"""Several workers on one study: the real CLI in subprocesses, real studies (journal file and a
throw-away PostgreSQL), real training on digits.

What must hold however the workers interleave: every trial is accounted for exactly once
(no RUNNING or WAITING trial left, the counted trials equal --trials, each candidate counted
once), a killed worker's trial is taken over and resumed from its checkpoint, a Pareto search
prunes dominated trials and keeps a front no finished trial dominates, and a bad storage or
objective stops with one line and exit 2, before a run folder exists.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import sqlalchemy
import torch
from conftest import TINY_SPACE, load_study, run_cli, start_cli
from pg import PostgresServer, postgres_server  # noqa: F401  (postgres_server is a fixture)

from cnnsearch.run.folder import RunDir
from cnnsearch.run.liveness import advisory_lock_key, ask_lock
from cnnsearch.run.storage import engine_url
from cnnsearch.search.progress import counted_trials
from cnnsearch.search.settings import UNLIMITED_TRIALS, SearchSettings
from cnnsearch.search.setup import prepare_run, resolve_target

STATES = optuna.trial.TrialState


def wait_for(predicate, timeout: float = 180.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached in {timeout:.0f}s")


def assert_accounted_once(study: optuna.Study, target: int) -> list[optuna.trial.FrozenTrial]:
    """Every trial number once, nothing left running or queued, exactly `target` counted,
    and each candidate (its origin: the first trial that trained it) counted once."""
    trials = study.get_trials(deepcopy=False)
    assert [t.number for t in trials] == list(range(len(trials)))
    assert not [t.number for t in trials if t.state in (STATES.RUNNING, STATES.WAITING)], [
        (t.number, t.state) for t in trials
    ]
    counted = counted_trials(study)
    assert len(counted) == target, [(t.number, t.state.name, t.user_attrs.get("outcome")) for t in trials]
    origins = [t.user_attrs.get("origin", t.number) for t in counted]
    assert len(set(origins)) == len(origins), origins
    return trials


def assert_clean_exit(stderr: str, returncode: int) -> None:
    assert returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "database is locked" not in stderr


def _tiny_run(runs_dir: Path, name: str, *, epochs: int, pruner: str | None = "none") -> tuple:
    """A new run of the tiny space on digits, made through the library (no CLI import cost)."""
    return prepare_run(
        SearchSettings(
            name=name,
            space=str(TINY_SPACE),
            data="digits",
            runs_dir=str(runs_dir),
            epochs=epochs,
            pruner=pruner,
            device="cpu",
        )
    )


# ---- several workers on this machine ---------------------------------------------------------------
# Two workers: every sampler's test in test_samplers.py runs one.
@pytest.mark.parametrize("workers, trials", [(3, 6)])
def test_local_workers_share_the_journal_study(runs_dir: Path, workers: int, trials: int) -> None:
    result = run_cli(
        "search",
        "--space",
        str(TINY_SPACE),
        "--data",
        "digits",
        "--name",
        "w",
        "--trials",
        str(trials),
        "--epochs",
        "2",
        "--workers",
        str(workers),
        "--device",
        "cpu",
        "--runs-dir",
        str(runs_dir),
    )
    assert_clean_exit(result.stderr, result.returncode)
    assert f"shared by {workers} workers" in result.stderr
    assert json.loads((runs_dir / "w" / "run.json").read_text())["storage"] == "journal"
    trials_done = assert_accounted_once(load_study(runs_dir, "w"), trials)
    assert len(trials_done) == trials  # nothing failed, nothing was re-run
    assert len({t.user_attrs["worker"] for t in trials_done}) <= workers
    finished_lines = [line for line in result.stdout.splitlines() if f"/{trials}] trial " in line]
    assert len(finished_lines) == trials, result.stdout


# ---- one deadline for all workers -----------------------------------------------------------------
def test_workers_stop_at_the_searchs_own_deadline_not_their_start_up_plus_the_timeout(runs_dir: Path) -> None:
    """Before: `search --workers N --timeout T` started each worker's T after its own start-up
    (importing torch, seconds), so they searched past the search's deadline, into the time an
    --export keeps for the final model. The workers now get the deadline itself (`--until`).
    And each worker rewrote the search's target of "as many as fit" to 20 trials."""
    from cnnsearch.search.parallel import spawn_workers

    run, info, _ = _tiny_run(runs_dir, "until", epochs=3)
    target = resolve_target(run, info, None, timed=True)  # a --timeout without --trials: as many as fit
    until = time.time() + 30.0  # room for a loaded machine's torch import and a trial before it
    processes = spawn_workers(run, workers=1, timeout_s=3600.0, device="cpu", checkpoint_every_s=0, until=until)
    try:
        (process,) = processes
        assert process.wait(timeout=120) == 0
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    ended = time.time()
    # Stopped by the deadline (or by refusing what no longer fits, just before it), not by the hour.
    assert until - 10.0 <= ended <= until + 20.0
    trials = run.load_study().get_trials(deepcopy=False)
    assert trials, "the worker trained nothing before the deadline"
    assert max(t.datetime_complete.timestamp() for t in trials if t.datetime_complete) <= until + 5.0
    # A worker reads the search's target, never rewrites it (one that did stopped the search at 20 trials).
    assert run.load_study().user_attrs["target_trials"] == target == UNLIMITED_TRIALS


def test_workers_joined_by_hand_draw_distinct_sampler_streams() -> None:
    """`cnnsearch worker` without --worker-index used index 0: two joined at the same time drew
    the same sampler stream and trained the same candidates side by side."""
    import subprocess
    import sys

    code = "from cnnsearch.search.parallel import joined_index; print(joined_index())"
    drawn = {
        int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
        for _ in range(3)
    }
    assert len(drawn) == 3 and min(drawn) >= 1000, drawn  # never one `search --workers N` gives its own
    # The largest index it can draw still seeds every sampler (7919 x 10^6 is past numpy's 2^32).
    from cnnsearch.search.strategies import SAMPLERS, make_sampler

    for name in SAMPLERS:
        sampler = make_sampler(name, 4_000_000_000, multi_objective=False, worker_index=1_001_000)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)


# ---- liveness -----------------------------------------------------------------------------------------
def test_a_trial_beats_from_its_ask_until_it_is_told(runs_dir: Path) -> None:
    """Before: the heartbeat stopped (its file removed) when training ended, before the result was
    recorded; a trial that had started over 30 s before was then judged dead by another worker in
    that gap, marked interrupted and queued again, and its own worker crashed telling it. And it
    began only after the budget's judgement: with PostgreSQL a worker killed before its first beat
    left a trial Optuna never calls stale (no heartbeat row), RUNNING for ever."""
    from cnnsearch.search.worker import WorkerLoop

    run, info, space = _tiny_run(runs_dir, "beat", epochs=1, pruner=None)
    target = resolve_target(run, info, 2)
    beating_when_told, beating_when_judged = {}, {}

    def on_event(event) -> None:  # noqa: ANN001
        if event.kind == "trial_start":  # sent once the budget let it start
            beating_when_judged[event.trial] = run.heartbeat_file(event.trial).exists()
        if event.kind == "trial_end":  # sent after the study is told
            beating_when_told[event.trial] = run.heartbeat_file(event.trial).exists()

    WorkerLoop(run, info, space, target=target, device="cpu", on_event=on_event).run_loop()
    assert len(beating_when_told) >= 2 and all(beating_when_told.values()), beating_when_told
    assert len(beating_when_judged) >= 2 and all(beating_when_judged.values()), beating_when_judged
    assert not list(run.heartbeat_file(0).parent.glob("*")), "no heartbeat is left once the trials are told"


def _gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for a parent that is gone counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def test_the_workers_of_a_killed_search_stop_and_save_their_trials(runs_dir: Path) -> None:
    """Before: SIGKILL on `search --workers 2` left both workers training on (a resume then added
    two more beside them). Now they get SIGTERM when it dies: they stop as on Ctrl-C."""
    search = start_cli(
        "search", "--space", str(TINY_SPACE), "--data", "digits", "--name", "orphans", "--trials", "1000",
        "--epochs", "6", "--pruner", "none", "--workers", "2", "--device", "cpu", "--checkpoint-every", "epoch",
        "--runs-dir", str(runs_dir),
    )  # fmt: skip
    try:
        journal = runs_dir / "orphans" / "study.journal"

        def workers() -> set[int]:
            if not journal.is_file():
                return set()
            trials = load_study(runs_dir, "orphans").get_trials(deepcopy=False)
            return {_worker_pid(t.user_attrs["worker"]) for t in trials if "worker" in t.user_attrs}

        wait_for(lambda: len(workers()) == 2, what="both workers training")
    finally:
        search.kill()
        search.wait()
    pids = workers()
    try:
        wait_for(lambda: all(_gone(pid) for pid in pids), timeout=60, what="the workers stopping after the search died")
    finally:
        for pid in pids:  # never leave one training on the machine
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)
    trials = load_study(runs_dir, "orphans").get_trials(deepcopy=False)
    assert not [t.number for t in trials if t.state == STATES.RUNNING], "each stopped its trial cleanly"
    assert [t for t in trials if t.user_attrs.get("outcome") == "interrupted"], "and queued it to resume"


# ---- a killed worker ---------------------------------------------------------------------------------
def _worker_pid(worker: str) -> int:
    return int(worker.rpartition(":")[2])


def test_sigkilled_worker_is_taken_over_and_resumed_from_its_checkpoint(runs_dir: Path) -> None:
    # Created through the library (no CLI import cost); the workers are real `cnnsearch worker` processes.
    run, info, _ = _tiny_run(runs_dir, "kill", epochs=6)
    target = resolve_target(run, info, 3)
    processes = [
        start_cli(
            "worker",
            "--name",
            "kill",
            "--runs-dir",
            str(runs_dir),
            "--device",
            "cpu",
            "--threads",
            "1",
            "--worker-index",
            str(index),
            "--quiet",
            "--checkpoint-every",
            "epoch",
        )
        for index in range(2)
    ]
    try:
        checkpoints = run.path / "checkpoints"
        wait_for(lambda: any(checkpoints.glob("trial_*.pt")), what="a first checkpoint")
        checkpoint_path = next(checkpoints.glob("trial_*.pt"))
        origin = int(checkpoint_path.stem.split("_")[1])
        owner = next(t for t in run.load_study().trials if t.number == origin)
        victim = next(process for process in processes if process.pid == _worker_pid(owner.user_attrs["worker"]))
        victim.kill()
        victim.wait()
        checkpoint = torch.load(
            checkpoint_path, weights_only=True
        )  # still there: resuming rewrites, never deletes early
        survivor = next(process for process in processes if process is not victim)
        stdout, stderr = survivor.communicate(timeout=240)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert_clean_exit(stderr, survivor.returncode)

    study = run.load_study()
    trials = assert_accounted_once(study, target)
    killed = trials[origin]
    assert killed.state == STATES.FAIL and killed.user_attrs["outcome"] == "interrupted"
    resumed = [t for t in trials if t.user_attrs.get("resume_of") == killed.number]
    assert len(resumed) == 1
    (resumed,) = resumed
    assert resumed.state == STATES.COMPLETE and resumed.params == killed.params
    assert resumed.user_attrs["origin"] == origin
    assert _worker_pid(resumed.user_attrs["worker"]) == survivor.pid
    assert resumed.user_attrs["val_acc"][: checkpoint["epoch"]] == checkpoint["val_acc"]  # continued, not restarted
    assert len(resumed.user_attrs["val_acc"]) == 6
    assert not list(checkpoints.glob("*.pt")), "a finished trial leaves no checkpoint"


# ---- PostgreSQL ---------------------------------------------------------------------------------------
def test_postgres_search_with_workers_and_a_worker_from_another_machine(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    here, there = tmp_path / "here", tmp_path / "there"  # two machines' runs folders
    search = start_cli(
        "search",
        "--space",
        str(TINY_SPACE),
        "--data",
        "digits",
        "--name",
        "shared",
        "--trials",
        "6",
        "--epochs",
        "2",
        "--workers",
        "2",
        "--device",
        "cpu",
        "--storage",
        postgres_server.url,
        "--runs-dir",
        str(here),
    )
    try:
        wait_for(lambda: (here / "shared" / "run.json").is_file() or search.poll() is not None, what="the run")
        joined = run_cli(
            "worker",
            "--name",
            "shared",
            "--storage",
            postgres_server.url,
            "--runs-dir",
            str(there),
            "--device",
            "cpu",
            "--threads",
            "1",
            "--worker-index",
            "2",
        )
        stdout, stderr = search.communicate(timeout=240)
    finally:
        if search.poll() is None:
            search.kill()
            search.wait()
    assert_clean_exit(stderr, search.returncode)
    assert_clean_exit(joined.stderr, joined.returncode)

    assert not (here / "shared" / "study.journal").exists()
    info = json.loads((here / "shared" / "run.json").read_text())
    assert info["storage"] == postgres_server.url
    # The joining worker rebuilt the run folder from the study alone.
    rebuilt = json.loads((there / "shared" / "run.json").read_text())
    assert {key: value for key, value in rebuilt.items() if key != "storage"} == {
        key: value for key, value in info.items() if key != "storage"
    }
    assert (there / "shared" / "space.toml").read_text() == TINY_SPACE.read_text()
    split_here, split_there = np.load(here / "shared" / "split.npz"), np.load(there / "shared" / "split.npz")
    assert all(np.array_equal(split_here[key], split_there[key]) for key in split_here.files)

    study = optuna.load_study(study_name="shared", storage=engine_url(postgres_server.url))
    trials = assert_accounted_once(study, 6)
    assert len(trials) == 6
    assert len({t.user_attrs["worker"] for t in trials}) <= 3


def test_ask_lock_on_postgres_is_an_advisory_lock_held_across_connections(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    run = RunDir(tmp_path, "locked")
    other = sqlalchemy.create_engine(engine_url(postgres_server.url), poolclass=sqlalchemy.pool.NullPool)
    probe = sqlalchemy.text("SELECT pg_try_advisory_lock(:key)")
    release = sqlalchemy.text("SELECT pg_advisory_unlock(:key)")
    key = {"key": advisory_lock_key("locked")}
    entered = threading.Event()
    try:
        with other.connect() as connection:
            with ask_lock(run, postgres_server.url):
                assert connection.execute(probe, key).scalar() is False  # another "machine" must wait
                # ...and a second worker really blocks until the first one leaves.
                waiter = threading.Thread(target=lambda: _enter_lock_then_set(run, postgres_server.url, entered))
                waiter.start()
                assert not entered.wait(1.0)
            assert entered.wait(10.0)
            waiter.join()
            assert connection.execute(probe, key).scalar() is True  # released by both
            connection.execute(release, key)
    finally:
        other.dispose()
    assert not (run.path / ".ask.lock").exists(), "a PostgreSQL run does not need the local file lock"


def _enter_lock_then_set(run: RunDir, url: str, entered: threading.Event) -> None:
    # A second process's lock, from this thread: the connection ask_lock keeps is per URL,
    # so a different spelling of the same database gives this thread a connection of its own.
    with ask_lock(run, url + "?application_name=second-worker"):
        entered.set()


# ---- Pareto search ------------------------------------------------------------------------------------
PARETO_SPACE_CHANGES = {
    # Two widths (two costs) and a learning rate too small to learn anything in 2 epochs: a
    # trial with it is beaten at epoch 1 by any finished trial as cheap, and must be pruned.
    "lr = { low = 5e-3, high = 3e-2, log = true }": "lr = [0.03, 0.00001]",
    "stages = [1, 2]": "stages = 2",
    'activation = ["relu", "silu"]': 'activation = "relu"',
    'pool_type = ["max", "avg"]': 'pool_type = "max"',
    "pool = [true, false]": "pool = true",
    "dense_layers = [0, 1]": "dense_layers = 0",
    "dropout = [0.0, 0.2]": "dropout = 0.0",
    "translate = [0, 1]": "translate = 0",
}


def test_multi_objective_search_prunes_dominated_trials_and_keeps_a_clean_front(runs_dir: Path, tmp_path: Path) -> None:
    from cnnsearch.results.leaderboard import leaderboard_frame

    text = TINY_SPACE.read_text()
    for old, new in PARETO_SPACE_CHANGES.items():
        assert old in text, old
        text = text.replace(old, new)
    space = tmp_path / "pareto.toml"
    space.write_text(text)
    result = run_cli(
        "search",
        "--space",
        str(space),
        "--data",
        "digits",
        "--name",
        "mo",
        "--trials",
        "5",
        "--epochs",
        "2",
        "--objective",
        "accuracy,params",
        "--device",
        "cpu",
        "--runs-dir",
        str(runs_dir),
    )
    assert_clean_exit(result.stderr, result.returncode)

    study = load_study(runs_dir, "mo")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    trials = assert_accounted_once(study, 5)
    dominated = [
        t for t in trials if t.state == STATES.PRUNED and "dominated at epoch" in t.user_attrs.get("reason", "")
    ]
    assert dominated, [(t.number, t.state.name, t.user_attrs.get("reason")) for t in trials]

    complete = [t for t in trials if t.state == STATES.COMPLETE]
    frame = leaderboard_frame(RunDir(runs_dir, "mo"))
    front = [study.trials[number] for number in frame.loc[frame["front"], "trial"]]
    assert front and all(t.state == STATES.COMPLETE for t in front)

    def dominates(a: optuna.trial.FrozenTrial, b: optuna.trial.FrozenTrial) -> bool:
        (acc_a, cost_a), (acc_b, cost_b) = a.values, b.values
        return acc_a >= acc_b and cost_a <= cost_b and (acc_a > acc_b or cost_a < cost_b)

    assert not [(a.number, b.number) for b in front for a in complete if dominates(a, b)]
    assert {t.number for t in front} == {t.number for t in study.best_trials}


# ---- bad input -----------------------------------------------------------------------------------------
def _assert_refused(result, runs_dir: Path, message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (runs_dir / "x").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--storage", "postgresql://u:p@127.0.0.1:1/x"],
            "cannot connect to storage postgresql://u:***@127.0.0.1:1/x: ",
        ),
        (["--objective", "accuracy,speed"], "--objective 'accuracy,speed' is not valid"),
    ],
)
def test_bad_storage_or_objective_is_one_line_and_exit_2(runs_dir: Path, args: list[str], message: str) -> None:
    result = run_cli(
        "search", "--space", str(TINY_SPACE), "--data", "digits", "--name", "x", "--runs-dir", str(runs_dir), *args
    )
    _assert_refused(result, runs_dir, message)
    assert "p@" not in result.stderr, "the password is never shown"


def test_wrong_password_is_one_line_and_exit_2(postgres_server: PostgresServer, runs_dir: Path) -> None:
    url = postgres_server.url_with_password("wrong")
    result = run_cli(
        "search",
        "--space",
        str(TINY_SPACE),
        "--data",
        "digits",
        "--name",
        "x",
        "--storage",
        url,
        "--runs-dir",
        str(runs_dir),
    )
    _assert_refused(result, runs_dir, "password authentication failed")
    assert ":wrong@" not in result.stderr
