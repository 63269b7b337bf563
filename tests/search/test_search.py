"""Searches end to end: the real CLI in a subprocess, real Optuna studies, real training on digits."""

from __future__ import annotations

import json
import signal
import time
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import torch
from conftest import TINY_SPACE, load_study, run_cli, start_cli

from cnnsearch.errors import UserError
from cnnsearch.outcomes import TrialRecord
from cnnsearch.search.progress import counted_trials
from cnnsearch.search.settings import SearchSettings
from cnnsearch.search.setup import prepare_run
from cnnsearch.search.strategies import make_pruner
from cnnsearch.search.worker import WorkerLoop
from cnnsearch.train.checkpoint import checkpoint_epochs

STATES = optuna.trial.TrialState


def write_space(path: Path, **overrides: str) -> Path:
    """A fully fixed space (one candidate) with some keys replaced, for controlled trials."""
    tables = {
        "network": {"stages": "2", "filters": "8", "width_multiplier": "2.0", "padding": '"same"'},
        "stage": {"convs": "1", "kernel_size": "3", "pool": "true"},
        "head": {"pooling": '"gap"'},
        "train": {"lr": "0.02", "batch_size": "32", "epochs": "2"},
    }
    for dotted, value in overrides.items():
        table, key = dotted.split("__")
        tables.setdefault(table, {})[key] = value
    text = "\n".join(
        f"[{table}]\n" + "\n".join(f"{key} = {value}" for key, value in keys.items()) for table, keys in tables.items()
    )
    path.write_text(text + "\n")
    return path


def wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("condition not reached in time")


# ---- the whole command -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    result = run_cli(
        "search",
        "--space",
        str(TINY_SPACE),
        "--data",
        "digits",
        "--name",
        "demo",
        "--trials",
        "3",
        "--epochs",
        "2",
        "--runs-dir",
        str(runs),
    )
    assert result.returncode == 0, result.stderr
    return runs


def test_search_writes_a_complete_run_folder(finished_run: Path) -> None:
    run = finished_run / "demo"
    for name in ("run.json", "space.toml", "split.npz", "study.journal"):
        assert (run / name).is_file(), name
    info = json.loads((run / "run.json").read_text())
    assert info["data"] == "digits" and info["epochs"] == 2
    assert info["split_sizes"]["train"] > info["split_sizes"]["val"] > 0
    assert {"torch", "optuna", "pytorch-lightning", "cnnsearch"} <= set(info["versions"])
    assert "cnnsearch search" in info["command"]
    study = load_study(finished_run, "demo")
    assert len(study.trials) == 3
    assert all(t.state in (STATES.COMPLETE, STATES.PRUNED) for t in study.trials)
    for trial in study.trials:
        record = json.loads((run / "trials" / f"{trial.number}.json").read_text())
        assert record["arch"]["layers"] and record["outcome"] == trial.user_attrs["outcome"]
        assert len(record["val_acc"]) == record["epochs_run"] >= 1
    assert list((run / "weights").glob("trial_*.pt")), "the best trial's weights are kept"
    assert not list((run / "checkpoints").glob("*.pt")), "finished trials leave no checkpoint"


def test_resume_adds_exactly_the_missing_trials(finished_run: Path) -> None:
    before = load_study(finished_run, "demo").trials
    result = run_cli("search", "--name", "demo", "--trials", "5", "--runs-dir", str(finished_run))
    assert result.returncode == 0, result.stderr
    after = load_study(finished_run, "demo").trials
    assert len(after) == 5
    assert [(t.number, t.state, t.value) for t in after[:3]] == [(t.number, t.state, t.value) for t in before]
    assert "resuming run 'demo'" in result.stderr
    # A resume with nothing left to train (a --timeout does not raise the target) says so.
    again = run_cli("search", "--name", "demo", "--timeout", "10m", "--runs-dir", str(finished_run))
    assert again.returncode == 0, again.stderr
    assert "run 'demo' already has its 5 trials; pass --trials N (over 5) to search on" in again.stderr
    assert len(load_study(finished_run, "demo").trials) == 5


def test_plain_output_is_one_line_per_trial(finished_run: Path) -> None:
    result = run_cli("search", "--name", "demo", "--trials", "6", "--runs-dir", str(finished_run))
    trial_lines = [line for line in result.stdout.splitlines() if line.startswith("[6/6] trial")]
    assert len(trial_lines) == 1, result.stdout
    assert "best" in trial_lines[0] and "left" in trial_lines[0]
    assert "cnnsearch leaderboard demo" in result.stderr


# ---- interruptions -------------------------------------------------------------------------------
def _checkpoint_written(runs: Path, name: str) -> bool:
    return any((runs / name / "checkpoints").glob("trial_*.pt"))


def test_sigkill_then_resume_continues_from_the_checkpoint(runs_dir: Path) -> None:
    process = start_cli(
        "search",
        "--space",
        str(TINY_SPACE),
        "--data",
        "digits",
        "--name",
        "k",
        "--trials",
        "1",
        "--epochs",
        "4",
        "--pruner",
        "none",
        "--runs-dir",
        str(runs_dir),
        "--checkpoint-every",
        "epoch",
    )
    wait_for(lambda: _checkpoint_written(runs_dir, "k"))
    process.kill()
    process.wait()
    checkpoint_path = next((runs_dir / "k" / "checkpoints").glob("trial_*.pt"))
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    assert [t.state for t in load_study(runs_dir, "k").trials] == [STATES.RUNNING]

    result = run_cli("search", "--name", "k", "--runs-dir", str(runs_dir))
    assert result.returncode == 0, result.stderr
    trials = load_study(runs_dir, "k").trials
    assert not [t for t in trials if t.state == STATES.RUNNING]
    killed = trials[0]
    assert killed.state == STATES.FAIL and killed.user_attrs["outcome"] == "interrupted"
    resumed = [t for t in trials if t.user_attrs.get("resume_of") == 0]
    assert len(resumed) == 1 and resumed[0].params == killed.params
    epochs_done = checkpoint["epoch"]
    assert resumed[0].user_attrs["val_acc"][:epochs_done] == checkpoint["val_acc"]
    assert len(resumed[0].user_attrs["val_acc"]) == 4
    assert len(counted_trials(load_study(runs_dir, "k"))) == 1


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_sigint_exits_130_and_leaves_no_running_trial(runs_dir: Path, signum: int) -> None:
    """SIGTERM too (timeout, systemd, docker stop): before, when Lightning's own handler saw it first,
    the process exited 0 with the trial RUNNING and its last epochs unsaved."""
    process = start_cli(
        "search",
        "--space",
        str(TINY_SPACE),
        "--data",
        "digits",
        "--name",
        "c",
        "--trials",
        "2",
        "--epochs",
        "6",
        "--pruner",
        "none",
        "--runs-dir",
        str(runs_dir),
        "--checkpoint-every",
        "epoch",
    )
    wait_for(lambda: _checkpoint_written(runs_dir, "c"))
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "resume with `cnnsearch search --name c" in stderr
    trials = load_study(runs_dir, "c").trials
    assert not [t for t in trials if t.state == STATES.RUNNING]
    interrupted = [t for t in trials if t.user_attrs.get("outcome") == "interrupted"]
    assert len(interrupted) == 1
    queued = [t for t in trials if t.state == STATES.WAITING]
    assert len(queued) == 1 and queued[0].system_attrs["fixed_params"] == interrupted[0].params
    if signum == signal.SIGINT:
        _every_cut_of_the_interruption_keeps_one_rerun(runs_dir / "c", interrupted[0].number)


def _every_cut_of_the_interruption_keeps_one_rerun(folder: Path, number: int) -> None:
    """A SIGKILL during the interruption's writes leaves a prefix of the journal: cut it at every
    record from trial `number`'s claim by its worker on; the next worker's recovery must leave exactly one
    re-run of it queued, and it never RUNNING. (Before: a cut after it was told FAIL and before its
    re-run was queued lost the candidate for good.)"""
    import shutil

    from cnnsearch.run.folder import RunDir
    from cnnsearch.run.liveness import recover_dead_trials

    lines = folder.joinpath("study.journal").read_bytes().splitlines(keepends=True)
    # From the record that names the trial's worker (before it, a trial is judged by its age alone).
    claimed = next(i for i, line in enumerate(lines) if "worker" in json.loads(line).get("user_attr", {}))
    for cut in range(claimed + 1, len(lines) + 1):
        copy = folder.parent / "cut" / folder.name
        shutil.rmtree(copy.parent, ignore_errors=True)
        shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("study.snapshot*"))
        copy.joinpath("study.journal").write_bytes(b"".join(lines[:cut]))
        run = RunDir(copy.parent, folder.name)
        study = run.load_study()
        recover_dead_trials(run, study)  # the search that wrote it has exited: its worker is gone
        trials = run.load_study().get_trials(deepcopy=False)
        reruns = [t.number for t in trials if TrialRecord.of(t).resume_of == number]
        assert len(reruns) == 1, f"cut after record {cut} of {len(lines)}: re-runs {reruns}"
        assert trials[number].state == STATES.FAIL, f"cut after record {cut}: {trials[number].state}"


# ---- what is not trained --------------------------------------------------------------------------
def _library_search(tmp_path: Path, space: Path, trials: int, **settings: object) -> tuple:
    run, info, loaded = prepare_run(
        SearchSettings(
            name="lib", space=str(space), data="digits", runs_dir=str(tmp_path), trials=trials, device="cpu", **settings
        )
    )
    return run, info, loaded


def test_duplicate_candidates_are_not_retrained(tmp_path: Path) -> None:
    run, info, space = _library_search(tmp_path, write_space(tmp_path / "one.toml"), 3)
    WorkerLoop(run, info, space, target=3, device="cpu").run_loop()
    trials = run.load_study().trials
    assert [t.user_attrs["outcome"] for t in trials] == ["complete", "duplicate", "duplicate"]
    assert all(t.user_attrs["duplicate_of"] == 0 for t in trials[1:])
    assert all(t.value == trials[0].value for t in trials)
    assert trials[1].user_attrs["train_seconds"] == 0.0
    # Like any trial it has its record in trials/ (before, none: `--enqueue runs/X/trials/N.json`
    # of a duplicate's row failed), with the network it copied.
    record = json.loads(run.trial_file(1).read_text())
    assert record["outcome"] == "duplicate" and record["arch"] == trials[0].user_attrs["arch"]
    # Exported, a duplicate is its original's weights and figures, trained with the original's seed.
    from cnnsearch.export.choose import _candidates

    chosen = {candidate.number: candidate for candidate in _candidates(trials)}
    assert (
        chosen[1].weights_trial == 0 and chosen[1].seed == trials[0].user_attrs["seed"] != trials[1].user_attrs["seed"]
    )


def test_infeasible_candidate_is_pruned_with_its_reason(tmp_path: Path) -> None:
    # One stage fits 8x8 images, three do not: a space no candidate fits is refused before it starts.
    space = write_space(
        tmp_path / "bad.toml", network__stages="[1, 3]", network__padding='"valid"', stage__kernel_size="5"
    )
    run, info, loaded = _library_search(tmp_path, space, 1)
    run.load_study().enqueue_trial({"network.stages": 3})
    WorkerLoop(run, info, loaded, target=1, device="cpu").run_loop()
    (trial,) = run.load_study().trials
    assert trial.user_attrs["epochs_run"] == 0 and trial.user_attrs["val_acc"] == [], "never trained"
    assert not run.checkpoint_file("trial_0").exists()
    assert trial.state == STATES.PRUNED
    assert trial.user_attrs["outcome"] == "infeasible"
    assert "larger than its" in trial.user_attrs["reason"] or "below 1x1" in trial.user_attrs["reason"]


def test_nan_loss_fails_the_trial_and_the_next_one_runs(tmp_path: Path) -> None:
    space = write_space(tmp_path / "lr.toml", train__lr="[10000.0, 0.02]", train__optimizer='"sgd"')
    run, info, loaded = _library_search(tmp_path, space, 2)
    study = run.load_study()
    study.enqueue_trial({"train.lr": 10000.0})
    study.enqueue_trial({"train.lr": 0.02})
    WorkerLoop(run, info, loaded, target=2, device="cpu").run_loop()
    first, second = run.load_study().trials
    assert first.user_attrs["outcome"] == "nan" and "lower the learning rate" in first.user_attrs["reason"]
    assert second.user_attrs["outcome"] == "complete" and second.value > 0.5


# ---- bad input ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args, message",
    [
        (["--trials", "0"], "--trials must be at least 1, but got 0"),
        (["--timeout", "soon"], "cannot read the duration 'soon'; use e.g. 90s, 20m, 2h or 1h30m"),
        (["--space", "nope.toml"], "space file not found: nope.toml"),
        (["--objective", "accuracy,speed"], "--objective 'accuracy,speed' is not valid"),
        ([], "no run named 'x' in"),
        (["--space", "tiny", "--keep-weights", "-1"], "--keep-weights must be 0 or more, but got -1"),
        (["--space", "tiny", "--from-run", "nosuch"], "no run named 'nosuch'"),
        (
            ["--space", "tiny", "--checkpoint-every", "often"],
            "--checkpoint-every 'often' is not valid; use a duration such as 30s or 5m, or `epoch`",
        ),
    ],
)
def test_bad_search_input_is_one_line_and_exit_2(runs_dir: Path, args: list[str], message: str) -> None:
    result = run_cli("search", "--name", "x", "--runs-dir", str(runs_dir), *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (runs_dir / "x").exists()


def test_unknown_run_and_changed_space_are_refused(finished_run: Path, tmp_path: Path) -> None:
    result = run_cli("leaderboard", "nosuch", "--runs-dir", str(finished_run))
    assert result.returncode == 2 and "no run named 'nosuch'" in result.stderr and "Traceback" not in result.stderr

    changed = tmp_path / "changed.toml"
    changed.write_text(TINY_SPACE.read_text().replace("filters = [8, 16]", "filters = [8, 32]"))
    journal = (finished_run / "demo" / "study.journal").read_bytes()
    result = run_cli("search", "--name", "demo", "--space", str(changed), "--runs-dir", str(finished_run))
    assert result.returncode == 2
    assert "[network] filters: [8, 16] -> [8, 32]" in result.stderr and "--fork NEW_NAME" in result.stderr
    assert (finished_run / "demo" / "study.journal").read_bytes() == journal


def test_asha_stops_a_trial_below_the_first_rung_and_lets_the_best_third_on() -> None:
    study = optuna.create_study(direction="maximize", pruner=make_pruner("asha", 8))
    for accuracy in (0.9, 0.8, 0.7, 0.6, 0.5):
        trial = study.ask()
        trial.report(accuracy, 1)
        study.tell(trial, accuracy) if not trial.should_prune() else study.tell(trial, state=STATES.PRUNED)
    weak, strong = study.ask(), study.ask()
    weak.report(0.4, 1)
    strong.report(0.95, 1)
    assert weak.should_prune() and not strong.should_prune()


def test_deadline_stops_the_running_trial_and_queues_it(tmp_path: Path) -> None:
    # A trial that cannot finish in the time left is stopped after its first measured epoch
    # (test_cost); the deadline itself cuts one that is still in its first epoch. One image a step:
    # an epoch of ~1,400 steps takes over a second on any machine; the deadline comes 0.5 s in.
    space = write_space(tmp_path / "long.toml", train__epochs="200", train__batch_size="1")
    run, info, loaded = _library_search(tmp_path, space, 5)

    def on_event(event) -> None:  # noqa: ANN001
        if event.kind == "trial_start":
            loop.deadline = time.monotonic() + 0.5

    loop = WorkerLoop(
        run, info, loaded, target=5, device="cpu", deadline=time.monotonic() + 3600, budget_s=1e6, on_event=on_event
    )
    loop.run_loop()
    assert not loop.interrupted, "a deadline is a normal end, not Ctrl-C"
    trials = run.load_study().trials
    assert trials[0].user_attrs["outcome"] == "interrupted"
    assert "time budget" in trials[0].user_attrs["reason"]
    assert trials[0].user_attrs["epochs_run"] == 0  # stopped inside the trial, not after an epoch
    assert [t.state for t in trials[1:]] == [STATES.WAITING]
    assert trials[1].user_attrs["origin"] == 0, "the queued re-run continues trial 0"


def test_a_trial_the_deadline_cuts_after_some_epochs_keeps_them_for_its_rerun(tmp_path: Path) -> None:
    # The pace measured after epoch 1 says the trial fits (the time left the worker judges by is an
    # hour), but the deadline the trial was started with comes 3 s in, as when training slows down:
    # the deadline cuts it, its finished epochs are checkpointed and its re-run is queued.
    space = write_space(tmp_path / "long.toml", train__epochs="200", train__batch_size="8")
    run, info, loaded = _library_search(tmp_path, space, 5)
    seen: list[str] = []

    def on_event(event) -> None:  # noqa: ANN001
        seen.append(event.kind)
        if event.kind == "trial_start":
            loop.deadline = time.monotonic() + 3.0  # the trial's own deadline
        elif event.kind == "epoch" and event.epoch == 1:
            loop.deadline = time.monotonic() + 3600  # what the pace is judged against
        elif event.kind == "trial_end":
            loop.deadline = time.monotonic()  # and the worker stops after this trial

    loop = WorkerLoop(
        run, info, loaded, target=5, device="cpu", deadline=time.monotonic() + 3600, budget_s=1e6, on_event=on_event
    )
    loop.run_loop()
    trials = run.load_study().trials
    record = TrialRecord.of(trials[0])
    assert record.outcome == "interrupted" and "time budget" in record.reason, record.reason
    assert record.epochs_run is not None and 0 < record.epochs_run < 200, seen
    assert run.checkpoint_file("trial_0").is_file()
    assert [t.state for t in trials[1:]] == [STATES.WAITING] and trials[1].user_attrs["origin"] == 0
    # What the re-run's budget judgement counts as done (only the epochs after them are charged).
    assert checkpoint_epochs(run.checkpoint_file("trial_0")) == record.epochs_run
    assert checkpoint_epochs(run.checkpoint_file("trial_0"), record.hash) == record.epochs_run
    assert checkpoint_epochs(run.checkpoint_file("trial_0"), "another network") == 0  # training would ignore it
    assert checkpoint_epochs(run.checkpoint_file("trial_9")) == 0  # none


def test_resume_refuses_other_settings_and_fork_keeps_them(finished_run: Path) -> None:
    result = run_cli("search", "--name", "demo", "--seed", "5", "--sampler", "random", "--runs-dir", str(finished_run))
    assert result.returncode == 2
    assert "--sampler: 'tpe' -> 'random'; --seed: 0 -> 5" in result.stderr and "--fork NEW_NAME" in result.stderr
    result = run_cli(
        "search", "--name", "demo", "--fork", "demo-fork", "--trials", "1", "--runs-dir", str(finished_run)
    )
    assert result.returncode == 0, result.stderr
    forked = json.loads((finished_run / "demo-fork" / "run.json").read_text())
    original = json.loads((finished_run / "demo" / "run.json").read_text())
    assert {key: forked[key] for key in ("data", "epochs", "seed", "sampler", "pruner")} == {
        key: original[key] for key in ("data", "epochs", "seed", "sampler", "pruner")
    }
    assert (finished_run / "demo-fork" / "space.toml").read_text() == (finished_run / "demo" / "space.toml").read_text()


def test_a_fork_of_a_timed_run_without_a_timeout_does_not_search_for_ever(runs_dir: Path) -> None:
    """Before: the fork took the source's target as its --trials, and a --timeout run's target is
    "as many as fit" (100,000): without a --timeout of its own the fork searched for ever."""
    from cnnsearch.search.settings import DEFAULT_TRIALS, UNLIMITED_TRIALS
    from cnnsearch.search.setup import fork_settings, open_search

    timed = SearchSettings(name="t", space=str(TINY_SPACE), data="digits", runs_dir=str(runs_dir), timeout_s=60.0)
    assert open_search(timed).target == UNLIMITED_TRIALS
    fork = SearchSettings(name="t", fork="f", runs_dir=str(runs_dir))
    assert fork_settings(fork).trials is None
    assert open_search(fork).target == DEFAULT_TRIALS
    assert open_search(replace(fork, name="t", fork="g", timeout_s=60.0)).target == UNLIMITED_TRIALS
    sized = SearchSettings(name="s", space=str(TINY_SPACE), data="digits", runs_dir=str(runs_dir), trials=7)
    open_search(sized)
    assert fork_settings(SearchSettings(name="s", fork="s2", runs_dir=str(runs_dir))).trials == 7  # a count is kept


def test_a_trial_record_can_be_enqueued_into_a_new_run(finished_run: Path, tmp_path: Path) -> None:
    from cnnsearch.search.warm_start import read_warm_start, warm_start_params
    from cnnsearch.space.parse import load_space

    record = finished_run / "demo" / "trials" / "0.json"
    settings = SearchSettings(name="w", enqueue=(str(record),))
    (arch,) = read_warm_start(settings)
    (params,) = warm_start_params(load_space(TINY_SPACE), [arch])
    replayed = load_space(TINY_SPACE).sample(optuna.trial.FixedTrial(params), epochs=arch["train"]["epochs"])
    assert replayed.to_dict() == arch
    (tmp_path / "bad.json").write_text('{"a": 1}')
    with pytest.raises(UserError, match="no architecture in it"):
        read_warm_start(SearchSettings(name="w", enqueue=(str(tmp_path / "bad.json"),)))


def test_leaderboard_out_needs_an_existing_folder(finished_run: Path, tmp_path: Path) -> None:
    result = run_cli(
        "leaderboard",
        "demo",
        "--format",
        "csv",
        "--out",
        str(tmp_path / "no" / "x.csv"),
        "--runs-dir",
        str(finished_run),
    )
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("leaderboard", "demo", "--out", str(tmp_path / "board.txt"), "--runs-dir", str(finished_run))
    assert result.returncode == 0 and "trial" in (tmp_path / "board.txt").read_text()
