"""Faults a run folder recovers from, or refuses with one line: a deleted run.json or split.npz,
a resumed trial's pruning history, the last epoch never pruned, warm-start repeats.

Real CLI runs in subprocesses, real Optuna studies in temp dirs, real training on tiny digits.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import optuna
import pytest
from conftest import TINY_SPACE, run_cli

from cnnsearch.data.split import load_split
from cnnsearch.run.folder import RunDir
from cnnsearch.search.settings import SearchSettings
from cnnsearch.search.setup import open_search, prepare_run
from cnnsearch.search.worker import WorkerLoop

STATES = optuna.trial.TrialState


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 3-trial search with --epochs 1 (ASHA: its first rung is the last epoch)."""
    runs = tmp_path_factory.mktemp("runs")
    result = run_cli(
        "search", "--space", str(TINY_SPACE), "--data", "digits", "--name", "r", "--trials", "3",
        "--epochs", "1", "--pruner", "asha", "--device", "cpu", "--runs-dir", str(runs),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return runs


def _copy(runs: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "runs"
    shutil.copytree(runs, copy)
    return copy


def _one_line_error(result, message: str) -> None:  # noqa: ANN001
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr


# ---- 7: the pruner is never asked after the last epoch ------------------------------------------
def test_a_trial_that_ran_every_epoch_is_complete(one_epoch_run: Path) -> None:
    trials = RunDir(one_epoch_run, "r").load_study().trials
    trained = [t for t in trials if t.user_attrs.get("epochs_run")]
    assert len(trained) == 3
    assert [t.user_attrs["outcome"] for t in trained] == ["complete"] * 3
    assert all(t.state == STATES.COMPLETE and t.intermediate_values == {1: t.value} for t in trained)


# ---- 3: run.json deleted ----------------------------------------------------------------------
def test_a_deleted_run_json_is_restored_from_the_study(one_epoch_run: Path, tmp_path: Path) -> None:
    runs = _copy(one_epoch_run, tmp_path)
    run = RunDir(runs, "r")
    original, space = json.loads(run.run_file.read_text()), run.space_file.read_text()
    run.run_file.unlink()
    run.space_file.unlink()
    result = run_cli("leaderboard", "r", "--format", "csv", "--runs-dir", str(runs))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == f"restored {run.run_file} and {run.space_file} from its study"
    assert len(result.stdout.strip().splitlines()) == 4
    assert json.loads(run.run_file.read_text()) == original and run.space_file.read_text() == space


def test_the_start_command_does_not_take_over_a_study_without_run_json(one_epoch_run: Path, tmp_path: Path) -> None:
    runs = _copy(one_epoch_run, tmp_path)
    run = RunDir(runs, "r")
    run.run_file.unlink()
    journal = run.journal_file.read_bytes()
    result = run_cli(
        "search",
        "--space",
        str(TINY_SPACE),
        "--data",
        "digits",
        "--name",
        "r",
        "--epochs",
        "2",
        "--runs-dir",
        str(runs),
    )
    assert f"restored {run.run_file} from its study" in result.stderr
    _one_line_error(result, "run 'r' was started with other settings (--epochs: 1 -> 2)")
    assert run.journal_file.read_bytes() == journal


def test_a_study_with_trials_and_no_run_record_is_refused(tmp_path: Path) -> None:
    from optuna.storages.journal import JournalStorage

    from cnnsearch.run.journal import RunJournal

    runs = tmp_path / "runs"
    run = RunDir(runs, "r")
    run.path.mkdir(parents=True)
    study = optuna.create_study(study_name="r", storage=JournalStorage(RunJournal(run.journal_file)))
    study.enqueue_trial({"x": 1.0})
    journal = run.journal_file.read_bytes()
    result = run_cli("search", "--space", str(TINY_SPACE), "--name", "r", "--runs-dir", str(runs))
    _one_line_error(result, f"{run.journal_file} already holds a study 'r' with 1 trial that cnnsearch did not start")
    assert not any(path.exists() for path in (run.run_file, run.space_file, run.split_file))
    assert run.journal_file.read_bytes() == journal


# ---- 4: split.npz deleted -----------------------------------------------------------------------
def test_a_deleted_split_is_rebuilt_from_its_seed_on_resume(one_epoch_run: Path, tmp_path: Path) -> None:
    runs = _copy(one_epoch_run, tmp_path)
    run = RunDir(runs, "r")
    saved = load_split(run.split_file)
    run.split_file.unlink()
    result = run_cli("search", "--name", "r", "--trials", "4", "--device", "cpu", "--runs-dir", str(runs))
    assert result.returncode == 0, result.stderr
    assert f"rebuilt {run.split_file} from the run's seed 0 (validation fraction 0.15)" in result.stderr
    assert load_split(run.split_file) == saved
    assert len(run.load_study().trials) == 4


def test_a_split_that_cannot_be_rebuilt_is_refused_before_anything_is_written(
    one_epoch_run: Path, tmp_path: Path
) -> None:
    runs = _copy(one_epoch_run, tmp_path)
    run = RunDir(runs, "r")
    run.split_file.unlink()
    info = json.loads(run.run_file.read_text())
    info["split_sizes"]["val"] += 1  # the split it records is not the one its seed gives
    run.run_file.write_text(json.dumps(info))
    before = {path.name: path.read_bytes() for path in run.path.iterdir() if path.is_file()}
    missing = (
        f"{run.split_file} is missing and cannot be rebuilt exactly: the run's seed gives 216 validation "
        "images, but run.json records 217"
    )

    result = run_cli("search", "--name", "r", "--trials", "5", "--runs-dir", str(runs))
    _one_line_error(result, f"{missing}; restore it to resume run 'r', or start a new run from its trials")
    after = {path.name: path.read_bytes() for path in run.path.iterdir() if path.is_file()}
    assert after == before, "a refused resume writes nothing (not even target_trials)"

    result = run_cli("rerun", "r", "0", "--device", "cpu", "--runs-dir", str(runs))
    _one_line_error(result, f"{missing}; restore it to re-run a trial on the images the search trained on")
    assert "resum" not in result.stderr

    result = run_cli("export", "r", "--no-retrain", "--out", str(tmp_path / "m"), "--runs-dir", str(runs))
    _one_line_error(result, f"{missing}; restore it to export the search's weights, or drop --no-retrain")
    assert "resum" not in result.stderr and not (tmp_path / "m").exists()


# ---- 5: a resumed trial reports the epochs its checkpoint holds ------------------------------
def test_a_resumed_trial_replays_its_checkpointed_epochs(tmp_path: Path) -> None:
    space = tmp_path / "four.toml"  # one fixed candidate, 4 epochs
    space.write_text(
        '[network]\nstages = 1\nfilters = 8\n[stage]\nconvs = 1\n[head]\npooling = "gap"\n'
        "[train]\nlr = 0.02\nbatch_size = 32\nepochs = 4\n"
    )
    run, info, loaded = prepare_run(
        SearchSettings(name="lib", space=str(space), data="digits", runs_dir=str(tmp_path), trials=1, device="cpu")
    )
    stop = {"now": False}

    def on_event(event) -> None:  # noqa: ANN001
        if event.kind == "epoch" and event.epoch == 2:
            stop["now"] = True  # checked inside epoch 3: the trial stops with epochs 1-2 checkpointed

    first = WorkerLoop(run, info, loaded, target=1, device="cpu", on_event=on_event, should_stop=lambda: stop["now"])
    first.run_loop()
    assert first.interrupted
    WorkerLoop(run, info, loaded, target=1, device="cpu").run_loop()
    interrupted, resumed = run.load_study().trials
    assert interrupted.user_attrs["outcome"] == "interrupted" and interrupted.user_attrs["epochs_run"] == 2
    assert resumed.user_attrs["outcome"] == "complete" and resumed.user_attrs["origin"] == 0
    curve = resumed.user_attrs["val_acc"]
    assert len(curve) == 4 and curve[:2] == interrupted.user_attrs["val_acc"]
    assert resumed.intermediate_values == dict(enumerate(curve, start=1))


# ---- 9: --enqueue says what it queued and what Optuna skipped ------------------------------------
def test_enqueue_says_which_candidates_were_skipped_and_why(one_epoch_run: Path, tmp_path: Path) -> None:
    runs = _copy(one_epoch_run, tmp_path)
    record = str(runs / "r" / "trials" / "0.json")
    fresh = json.loads(Path(record).read_text())
    fresh["arch"]["train"]["lr"] = 0.0123  # inside the space, tried by no trial
    (tmp_path / "fresh.json").write_text(json.dumps(fresh))
    settings = SearchSettings(
        name="r", runs_dir=str(runs), enqueue=(record, str(tmp_path / "fresh.json"), str(tmp_path / "fresh.json"))
    )
    opened = open_search(settings)
    assert opened.notes == [
        "queued 1 known candidate to train first; skipped 2 already in the study: "
        f"{record} (trial 0, complete), {tmp_path / 'fresh.json'} (trial 3, waiting)"
    ]
    waiting = opened.run.load_study().get_trials(states=(STATES.WAITING,))
    assert len(waiting) == 1 and waiting[0].system_attrs["fixed_params"]["train.lr"] == pytest.approx(0.0123)


def test_the_weights_kept_are_those_of_the_trials_export_ranks_first(tmp_path: Path) -> None:
    """Before: a tie kept the older trial's weights although export (and the leaderboard) rank the
    one with fewer parameters first, and a trial the trial timeout stopped outranked complete ones
    by accuracy alone although export takes it last: the trial export chose had no weights."""
    import torch

    from cnnsearch.run.folder import write_atomic
    from cnnsearch.search.weights import keep_best_weights
    from cnnsearch.train.result import TrialResult

    run, _, _ = prepare_run(SearchSettings(name="k", space=str(TINY_SPACE), data="digits", runs_dir=str(tmp_path)))
    net = torch.nn.Linear(4, 2)

    def finish(number: int, outcome: str, accuracy: float, params: int) -> None:
        result = TrialResult(outcome, val_acc=[accuracy], epochs_run=1, params=params, model=net)
        record = {"trial": number, "outcome": outcome, "best_val_acc": accuracy, "params": params}
        write_atomic(run.trial_file(number), json.dumps(record))  # as the worker writes it, before the weights
        keep_best_weights(run, number, result, keep=1)

    kept = lambda: sorted(path.name for path in run.path.glob("weights/*.pt"))  # noqa: E731
    finish(0, "complete", 0.9, 9_000)
    finish(1, "complete", 0.9, 3_000)  # tied, and lighter: export takes it
    assert kept() == ["trial_1.pt"]
    finish(2, "complete", 0.9, 5_000)  # tied, heavier: not kept
    assert kept() == ["trial_1.pt"]
    finish(3, "timeout", 0.95, 1_000)  # stopped by the trial timeout: export ranks it after every complete one
    assert kept() == ["trial_1.pt"]
    finish(4, "complete", 0.91, 20_000)
    assert kept() == ["trial_4.pt"]


def test_a_rerun_refused_as_too_slow_is_queued_again_by_the_next_session(tmp_path: Path) -> None:
    """Before: a re-run of an interrupted trial that a short --timeout refused as too_slow was never
    proposed again (only the queue holds it), so its checkpoint's epochs were lost for good."""
    space = tmp_path / "two.toml"
    space.write_text(
        '[network]\nstages = 1\nfilters = 8\n[stage]\nconvs = 1\n[head]\npooling = "gap"\n'
        "[train]\nlr = [0.02, 0.01]\nbatch_size = 32\nepochs = [4, 1000]\n"
    )
    run, info, loaded = prepare_run(
        SearchSettings(name="lib", space=str(space), data="digits", runs_dir=str(tmp_path), device="cpu", pruner="none")
    )
    study = run.load_study()
    study.enqueue_trial({"train.lr": 0.02, "train.epochs": 4})  # trains: it calibrates the cost model
    study.enqueue_trial({"train.lr": 0.01, "train.epochs": 1000})  # interrupted after epoch 2
    stop = {"now": False}

    def on_event(event) -> None:  # noqa: ANN001
        if event.kind == "epoch" and event.trial == 1 and event.epoch == 2:
            stop["now"] = True

    first = WorkerLoop(run, info, loaded, target=2, device="cpu", on_event=on_event, should_stop=lambda: stop["now"])
    first.run_loop()
    # A session of 8 s (set-up included): the re-run's 998 epochs left do not fit, it is refused (too_slow).
    WorkerLoop(run, info, loaded, target=3, device="cpu", deadline=time.monotonic() + 8.0).run_loop()
    trials = run.load_study().trials
    refused = [t for t in trials if t.user_attrs.get("resume_of") == 1]
    assert [t.user_attrs["outcome"] for t in refused] == ["too_slow"], [t.user_attrs.get("outcome") for t in trials]
    # The next session (a resume, as `cnnsearch search` records one) queues it again and it resumes
    # from the checkpoint (stopped after one more epoch). Within the session it stays refused.
    WorkerLoop(run, info, loaded, target=3, device="cpu", deadline=time.monotonic() + 8.0).run_loop()
    assert not [t for t in run.load_study().trials if t.user_attrs.get("resume_of") == refused[0].number]
    info.resumes.append(f"{datetime.now(UTC).isoformat()} cnnsearch search --name lib")
    run.write_info(info)
    stop["now"] = False

    def after_one(event) -> None:  # noqa: ANN001
        if event.kind == "epoch" and event.epoch >= 3:
            stop["now"] = True

    WorkerLoop(
        run, info, loaded, target=5, device="cpu", on_event=after_one, should_stop=lambda: stop["now"]
    ).run_loop()
    trials = run.load_study().trials
    again = [t for t in trials if t.user_attrs.get("resume_of") == refused[0].number]
    assert len(again) == 1 and again[0].user_attrs["origin"] == 1
    assert again[0].user_attrs["val_acc"][:2] == trials[1].user_attrs["val_acc"][:2], "continued from its checkpoint"
