"""The final model's schedule: --final-epochs, --final-budget, the default, and `search --export`
that fits search and final training into one --timeout. Real CLI, real digits trainings."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY_SPACE, load_study, run_cli

from cnnsearch.errors import UserError
from cnnsearch.export import retrain
from cnnsearch.export.schedule import (
    DEFAULT_FINAL_FACTOR,
    MAX_BUDGET_FACTOR,
    PACE_MARGIN,
    REPLAN_EPOCHS,
    THREAD_GAIN_SHARE,
    FinalPacer,
    final_schedule,
    split_budget,
    unknown_pace_schedule,
)
from cnnsearch.run.folder import RunDir


def _schedule(**given: object):
    settings: dict[str, object] = {
        "search_epochs": 4,
        "final_epochs": None,
        "final_budget_s": None,
        "search_epoch_s": 2.0,
        "search_images": 800,
        "final_images": 1000,
    }
    settings.update(given)
    return final_schedule(**settings)  # type: ignore[arg-type]


def test_the_schedule_rules() -> None:
    assert _schedule().epochs == DEFAULT_FINAL_FACTOR * 4
    assert _schedule().predicted_s == pytest.approx(12 * 2.5)  # 2 s per epoch on 800 images -> 2.5 s on 1000
    assert _schedule(final_epochs=7).epochs == 7
    budget = _schedule(final_budget_s=26.0)
    assert budget.epochs == 10 and budget.why == "fits --final-budget 26 s at ~2.5 s per epoch"
    capped = _schedule(final_budget_s=1000.0)
    assert capped.epochs == MAX_BUDGET_FACTOR * 4 and "capped at 10x the search's 4 epochs" in capped.why
    assert _schedule(search_epochs=1).why == f"{DEFAULT_FINAL_FACTOR}x the search's 1 epoch"  # not "1 epochs"
    with pytest.raises(UserError, match="shorter than one epoch of the final training"):
        _schedule(final_budget_s=1.0)


def test_a_trial_timed_with_fewer_threads_is_credited_most_of_the_speed_up() -> None:
    # 2.5 s per epoch at 1 thread (a worker of --workers 2); the final training has 2: 1 + 0.8 x (2 - 1) = 1.8x.
    faster = _schedule(final_budget_s=26.0, search_threads=1, final_threads=2)
    assert THREAD_GAIN_SHARE == 0.8 and faster.epochs == int(26.0 // (2.5 / 1.8)) == 18
    assert faster.why == f"fits --final-budget 26 s at ~{2.5 / 1.8:.1f} s per epoch"
    assert _schedule(final_budget_s=26.0, search_threads=2, final_threads=2).epochs == 10  # same threads: as before
    assert _schedule(final_budget_s=26.0, search_threads=2, final_threads=1).epochs == 10  # never slowed down
    assert _schedule(final_budget_s=26.0, search_threads=None, final_threads=2).epochs == 10  # unknown: as before
    with pytest.raises(UserError, match="pass only one of them"):
        _schedule(final_budget_s=10.0, final_epochs=3)
    with pytest.raises(UserError, match="measured time per epoch"):
        _schedule(final_budget_s=10.0, search_epoch_s=None)
    search, final = split_budget(600)
    assert search + final == 600 and 0 < final < search


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    result = run_cli(
        "search", "--space", str(TINY_SPACE), "--data", "digits", "--name", "f", "--runs-dir", str(runs),
        "--trials", "2", "--epochs", "1", "--device", "cpu", "--pruner", "none",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return runs


def test_export_trains_the_asked_epochs_and_records_both_accuracies(small_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    result = run_cli("export", "f", "--runs-dir", str(small_run), "--out", str(out), "--final-epochs", "3")
    assert result.returncode == 0, result.stderr
    # Not a terminal: one progress line per epoch, with the loss and the time left.
    progress = [line for line in result.stderr.splitlines() if line.startswith("final training epoch")]
    assert [line.split()[3] for line in progress] == ["1/3", "2/3", "3/3"], result.stderr
    assert all(" loss " in line and " left ~" in line for line in progress)
    meta = json.loads((out / "model.json").read_text())
    assert meta["retrain_epochs"] == 3 and meta["final_schedule"] == "--final-epochs 3"
    assert 0 < meta["val_accuracy"] <= 1 and 0 < meta["test_accuracy"] <= 1
    assert (
        f"search validation accuracy {meta['val_accuracy']:.2%} -> final test accuracy {meta['test_accuracy']:.2%}"
        in result.stdout
    )
    # The report shows them side by side.
    report = run_cli("report", "f", "--runs-dir", str(small_run))
    assert report.returncode == 0, report.stderr
    html = (small_run / "f" / "report.html").read_text()
    assert "search validation accuracy" in html and "after a final training of 3 epochs" in html


def test_bad_final_schedules_are_refused_before_training(small_run: Path, tmp_path: Path) -> None:
    cases = [
        (["--final-epochs", "3", "--final-budget", "1m"], "pass only one of them"),
        (["--final-epochs", "0"], "--final-epochs must be at least 1, but got 0"),
        (["--final-budget", "soon"], "--final-budget soon: cannot read the duration"),
        (["--final-budget", "1m", "--no-retrain"], "--final-budget has no effect with --no-retrain"),
    ]
    for args, message in cases:
        out = tmp_path / "never"
        result = run_cli("export", "f", "--runs-dir", str(small_run), "--out", str(out), *args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert not out.exists()


def test_search_export_refuses_a_folder_it_could_not_write_before_searching(tmp_path: Path) -> None:
    """Before: a path under a file passed the check and failed with a traceback at the end, after
    the whole search and final training; and a used folder was told to "pass --force", which
    `search` does not have."""
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    cases = [(afile / "model", f"--export {afile / 'model'} is inside {afile}, which is a file; choose another folder")]
    cases.append((used, f"{used} exists and is not empty; choose another --export"))
    for out, message in cases:
        runs = tmp_path / "runs"
        result = run_cli(
            "search", "--space", str(TINY_SPACE), "--data", "digits", "--timeout", "1h", "--export", str(out),
            "--runs-dir", str(runs),
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip() == f"error: {message}", result.stderr
        assert not runs.exists(), "refused before anything was made"


def test_search_export_fits_search_and_final_model_in_one_timeout(tmp_path: Path) -> None:
    timeout_s = 25
    runs, out = tmp_path / "runs", tmp_path / "best"
    started = time.monotonic()
    result = run_cli(
        "search", "--space", str(TINY_SPACE), "--data", "digits", "--name", "e", "--runs-dir", str(runs),
        "--timeout", f"{timeout_s}s", "--epochs", "2", "--device", "cpu", "--export", str(out),
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "exporting the best model of run 'e'" in result.stderr
    meta = json.loads((out / "model.json").read_text())
    assert meta["run"] == "e" and 0 < meta["test_accuracy"] <= 1
    # The final training took what the search left: a budget, or the search's weights when too short.
    assert meta["final_schedule"].startswith("fits --final-budget") or meta["retrained"] is False, meta
    if meta["retrained"]:  # a re-plan at the measured pace may change the epochs: the record says what ran
        done = [line.split()[3] for line in result.stderr.splitlines() if line.startswith("final training epoch")]
        assert done and done[-1] == f"{meta['retrain_epochs']}/{meta['retrain_epochs']}", (done, meta)
        assert len(done) == meta["retrain_epochs"] == meta["weights_epoch"]
        assert ("re-planned at the measured pace" in meta["final_schedule"]) == (";" in meta["final_schedule"])
        # What the final training ran is on record, in the model folder and in the run (exports.json).
        replans = meta["replans"]
        assert all(len(change) == 3 for change in replans) and (not replans or replans[-1][2] == meta["retrain_epochs"])
        assert ("re-planned" in meta["final_schedule"]) <= bool(replans)
        (record,) = json.loads((runs / "e" / "exports.json").read_text())
        assert record["replans"] == replans and record["seed"] == meta["seed"]
    # The search stopped at its share of the budget (30% kept): its trials all began within 70% of it.
    trials = load_study(runs, "e").trials
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    assert len(starts) >= 2 and (max(starts) - min(starts)).total_seconds() < 0.7 * timeout_s
    assert elapsed < timeout_s + 30, "the whole job ends near its budget (start-up and the test pass aside)"
    # A used folder is refused before anything runs.
    again = run_cli("search", "--name", "e", "--runs-dir", str(runs), "--timeout", "10s", "--export", str(out))
    assert again.returncode == 2 and f"{out} exists" in again.stderr


class _Clock:
    """A clock the test moves by hand: the pacer's arithmetic without the wall clock's jitter."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_budget_fitted_schedule_is_replanned_at_the_measured_pace() -> None:
    fitted = _schedule(final_budget_s=26.0)  # 10 epochs at a predicted 2.5 s; floor: the search's 4
    assert fitted.fitted and fitted.cap == MAX_BUDGET_FACTOR * 4 and fitted.floor == 4
    clock = _Clock()
    # Faster than predicted: 1 s per epoch with 20 s left -> 1 + floor(20 / (1 x PACE_MARGIN)) = 20.
    pacer = FinalPacer(fitted, deadline=clock.now + 21, clock=clock)
    clock.now += 1
    assert pacer.replan(1, 1.0) == 1 + math.floor(20 / PACE_MARGIN) == 20
    assert pacer.note() == (
        "re-planned at the measured pace to end within the budget: 10 epochs -> 20 after epoch 1 at 1.0 s each"
    )
    # The first epoch carries one-off set-up: from the second on, the pace is that of the later ones.
    setup = FinalPacer(fitted, deadline=clock.now + 22, clock=clock)
    clock.now += 2
    assert setup.replan(1, 2.0) == 10  # 1 + floor(20 / 2.06) = 10: as planned
    clock.now += 1
    assert setup.replan(2, 3.0) == 2 + math.floor(19 / PACE_MARGIN) == 20
    # After REPLAN_EPOCHS it never grows again...
    for epoch in range(3, REPLAN_EPOCHS + 1):  # 1 s each, as planned
        clock.now += 1
        assert setup.replan(epoch, 3.0 + (epoch - 2)) == 20
    setup.deadline = clock.now + 1000
    clock.now += 1
    assert setup.replan(REPLAN_EPOCHS + 1, REPLAN_EPOCHS + 2.0) == 20
    # ...but it shrinks when the epochs left no longer fit at the slower of the later epochs' mean
    # pace and the last one's: the next epoch takes 4 s, with 10 s left -> 2 more.
    epoch = REPLAN_EPOCHS + 2
    setup.deadline = clock.now + 14
    clock.now += 4
    assert setup.replan(epoch, REPLAN_EPOCHS + 6.0) == epoch + math.floor(10 / 4.0) == epoch + 2
    assert setup.note().endswith(
        f"10 epochs -> 20 after epoch 2 at 1.0 s each, -> {epoch + 2} after epoch {epoch} at 4.0 s each"
    )
    # Slower: 5 s per epoch with 20 s left fits 3 more, but never fewer than the search's 4 epochs.
    slow = FinalPacer(fitted, deadline=clock.now + 25, clock=clock)
    clock.now += 5
    assert slow.replan(1, 5.0) == 4 and slow.note().endswith("10 epochs -> 4 after epoch 1 at 5.0 s each")
    clock.now += 5  # on time: 2 more epochs at 5 s fit the 15 s left
    assert slow.replan(2, 10.0) == 4
    # Far slower than any prediction (another device, an OOM retry): the search's epochs would overrun
    # by 3 min, far more than an epoch or 10% of the budget; it ends now. (Before: kept, unbounded.)
    cut = FinalPacer(fitted, deadline=clock.now + 25, clock=clock)
    clock.now += 5
    assert cut.replan(1, 5.0) == 4
    clock.now += 95
    assert cut.replan(2, 100.0) == 2
    # Far faster: capped at MAX_BUDGET_FACTOR x the search's epochs.
    assert FinalPacer(fitted, deadline=clock.now + 1000, clock=clock).replan(1, 1.0) == fitted.cap
    # Not fitted to a budget (--final-epochs, the default): never re-planned.
    named = FinalPacer(_schedule(final_epochs=7), deadline=clock.now + 1, clock=clock)
    assert named.replan(1, 0.1) == 7 and named.replan(5, 100.0) == 7 and named.note() == ""
    # No measured pace: the most a budget may buy, cut after the first epoch to what fits.
    unknown = unknown_pace_schedule(4)
    assert unknown.epochs == unknown.cap == MAX_BUDGET_FACTOR * 4 and unknown.floor == 1
    cut = FinalPacer(unknown, deadline=clock.now + 10, clock=clock)
    assert cut.replan(1, 2.0) == 1 + math.floor(10 / (2 * PACE_MARGIN))


def test_the_pacer_grows_a_schedule_only_while_it_warms_up() -> None:
    """More epochs move the learning rate back along its schedule (a share of the planned
    steps): during the warm-up that is a dip in a rising rate; after it, a second warm-up."""
    fitted = _schedule(final_budget_s=26.0)  # 10 epochs, so a 0.2 warm-up ends after epoch 2
    clock = _Clock()
    warming = FinalPacer(fitted, deadline=clock.now + 21, clock=clock, warmup=0.2)
    clock.now += 1
    assert warming.replan(1, 1.0) == 20  # epoch 1 of 10: still warming up
    late = FinalPacer(fitted, deadline=clock.now + 22, clock=clock, warmup=0.2)
    clock.now += 2
    assert late.replan(1, 2.0) == 10  # as planned
    clock.now += 1  # epoch 2 took 1 s: 20 would fit, but epoch 2 of 10 ends the warm-up
    assert late.replan(2, 3.0) == 10 and late.note() == ""
    clock.now += 10  # it still shrinks after the warm-up when time runs short
    assert late.replan(3, 13.0) == 3 + math.floor(9 / (5.5 * PACE_MARGIN)) == 4


def test_the_pacer_forgets_the_epochs_of_a_failed_attempt() -> None:
    """An out-of-memory retry starts the training again (TrialControl.on_train_start): its first
    epoch is timed from the restart, not as the difference from the failed attempt's epochs."""
    fitted = _schedule(final_budget_s=26.0)
    clock = _Clock()
    pacer = FinalPacer(fitted, deadline=clock.now + 31, clock=clock)
    clock.now += 5
    assert pacer.replan(1, 5.0) == 1 + math.floor(26 / (5 * PACE_MARGIN)) == 6  # the failed attempt
    clock.now += 1
    pacer.restart()
    assert pacer.durations == [] and pacer.started == clock.now and pacer.epochs == fitted.epochs == 10
    clock.now += 1
    # The retry's epoch 1 took 1 s (elapsed 1.0 from its own start), not 1.0 - 5.0: 24 s left.
    assert pacer.replan(1, 1.0) == 1 + math.floor(24 / PACE_MARGIN) == 24 and pacer.durations == [1.0]
    # ...and starts from the schedule's own epochs: its note tells the retry's re-plans only.
    assert pacer.note().endswith("10 epochs -> 24 after epoch 1 at 1.0 s each"), pacer.note()


def test_search_export_trains_one_whole_epoch_when_less_than_one_fits() -> None:
    """With nothing else to export, a budget shorter than one epoch gets one whole epoch (its
    learning rate warmed up and decayed in full), not the unknown-pace cap cut to one epoch."""
    with pytest.raises(UserError, match="shorter than one epoch"):
        _schedule(final_budget_s=1.0)
    one = _schedule(final_budget_s=1.0, at_least_one=True)
    assert one.epochs == 1 and not one.fitted and one.why == "one epoch: the 1.0 s left is shorter than one (~2.5 s)"
    assert one.predicted_s == pytest.approx(2.5)
    assert _schedule(final_budget_s=26.0, at_least_one=True) == _schedule(final_budget_s=26.0)


def test_final_budget_counts_from_the_end_of_the_top_confirmation(
    small_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--final-budget is the final training's time: the deadline its pacer works to starts when
    a --top confirmation ends (counted from the start of export, a confirmation longer than the
    budget left the final training cut to its floor). Real trainings; the pacer class is wrapped
    only to read the deadline it was given."""
    deadlines: list[float | None] = []

    class Recording(retrain.FinalPacer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            deadlines.append(self.deadline)

    monkeypatch.setattr(retrain, "FinalPacer", Recording)
    chosen_at: list[float] = []

    def on_message(text: str) -> None:
        if text.startswith("chose trial"):  # said when the confirmation has ended
            chosen_at.append(time.monotonic())

    budget = 3.0
    result = retrain.export_run(
        RunDir(small_run, "f"), out=tmp_path / "model", top=2, seeds=2, final_budget_s=budget,
        device="cpu", on_message=on_message,
    )  # fmt: skip
    assert len(chosen_at) == 1 and len(deadlines) == 1, (chosen_at, deadlines)
    deadline = deadlines[0]
    assert deadline is not None and deadline >= chosen_at[0] + budget
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert len(meta["confirmation"]) == 2 and meta["retrain_epochs"] >= 1 and result is not None
