"""The run journal: Optuna's file format, fsync only where a power cut would lose a result."""

from __future__ import annotations

import multiprocessing
import os

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.storages.journal._storage import JournalOperation
from optuna.trial import TrialState

from cnnsearch.errors import JournalDamaged
from cnnsearch.run import journal
from cnnsearch.run.journal import RunJournal, needs_fsync

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_op_codes_match_optuna():
    for name in (
        "CREATE_TRIAL",
        "SET_TRIAL_PARAM",
        "SET_TRIAL_STATE_VALUES",
        "SET_TRIAL_INTERMEDIATE_VALUE",
        "SET_TRIAL_USER_ATTR",
        "SET_TRIAL_SYSTEM_ATTR",
    ):
        assert getattr(journal, name) == getattr(JournalOperation, name)
    assert (TrialState.RUNNING.value, TrialState.WAITING.value) == (journal.RUNNING, journal.WAITING)


def test_only_trial_ends_and_study_records_are_fsynced():
    assert not needs_fsync({"op_code": JournalOperation.SET_TRIAL_PARAM})
    assert not needs_fsync({"op_code": JournalOperation.SET_TRIAL_USER_ATTR})
    assert not needs_fsync({"op_code": JournalOperation.SET_TRIAL_STATE_VALUES, "state": TrialState.RUNNING.value})
    for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL):
        assert needs_fsync({"op_code": JournalOperation.SET_TRIAL_STATE_VALUES, "state": state.value})
    assert needs_fsync({"op_code": JournalOperation.CREATE_STUDY})
    assert needs_fsync({"op_code": JournalOperation.SET_STUDY_USER_ATTR})


def _run_trials(storage, count: int, name: str = "s") -> optuna.Study:
    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True)
    for _ in range(count):
        trial = study.ask()
        x = trial.suggest_float("x", -1, 1)
        trial.set_user_attr("note", "a" * 10)
        trial.report(x, 1)
        study.tell(trial, x * x)
    return study


def _summary(study: optuna.Study) -> list[tuple]:
    return [(t.number, t.state, t.params, t.user_attrs, t.intermediate_values, t.values) for t in study.trials]


def test_file_is_optunas_format_both_ways(tmp_path):
    ours = tmp_path / "ours.journal"
    study = _run_trials(JournalStorage(RunJournal(ours)), 5)
    read_by_optuna = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(ours))))
    assert _summary(read_by_optuna) == _summary(study)

    theirs = tmp_path / "theirs.journal"  # a run written before this backend existed
    old = _run_trials(JournalStorage(JournalFileBackend(str(theirs))), 4)
    reopened = optuna.load_study(study_name="s", storage=JournalStorage(RunJournal(theirs)))
    assert _summary(reopened) == _summary(old)
    _run_trials(JournalStorage(RunJournal(theirs)), 2)  # and goes on appending to it
    assert len(optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(theirs)))).trials) == 6


def test_snapshot_replays_only_the_tail(tmp_path):
    path = tmp_path / "study.journal"
    study = _run_trials(JournalStorage(RunJournal(path)), 130)
    snapshot = tmp_path / "study.snapshot"
    assert snapshot.is_file()  # Optuna hands one over at trial 100
    backend = RunJournal(path)
    loaded = JournalStorage(backend)
    # The replay started at the snapshot: trial 100's creation record is near the end.
    assert loaded._replay_result.log_number_read == path.read_bytes().count(b"\n")
    assert _summary(optuna.load_study(study_name="s", storage=loaded)) == _summary(study)
    full = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))))
    assert _summary(full) == _summary(study)

    snapshot.write_bytes(b"not a pickle")  # damaged: a full replay, same answer
    assert _summary(optuna.load_study(study_name="s", storage=JournalStorage(RunJournal(path)))) == _summary(study)


def test_a_snapshot_is_not_trusted_once_the_journal_no_longer_holds_what_it_saw(tmp_path):
    """The repair JournalDamaged names (`head -n K study.journal`), or a power cut that keeps the
    snapshot but loses the journal's unfsynced tail, leaves fewer records than the snapshot was
    taken after. Before: the snapshot was restored anyway, showing trials the journal no longer
    had, and records appended later were applied on top of it (Optuna's own reader disagreed)."""
    path = tmp_path / "study.journal"
    _run_trials(JournalStorage(RunJournal(path)), 130)
    assert (tmp_path / "study.snapshot").is_file()
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[: len(lines) // 2]))  # cut back before the snapshot's records

    def by_optuna() -> list[tuple]:
        return _summary(optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path)))))

    ours = optuna.load_study(study_name="s", storage=JournalStorage(RunJournal(path)))
    assert len(ours.trials) < 100 and _summary(ours) == by_optuna()
    _run_trials(JournalStorage(RunJournal(path)), 3)  # the search resumed after the repair
    assert _summary(optuna.load_study(study_name="s", storage=JournalStorage(RunJournal(path)))) == by_optuna()


def test_a_partial_last_line_waits_and_a_damaged_middle_one_is_an_error(tmp_path):
    path = tmp_path / "study.journal"
    _run_trials(JournalStorage(RunJournal(path)), 2)
    with open(path, "ab") as handle:
        handle.write(b'{"op_code": 4, "worker')  # another process is half-way through a write
    study = optuna.load_study(study_name="s", storage=JournalStorage(RunJournal(path)))
    assert len(study.trials) == 2
    with open(path, "ab") as handle:
        handle.write(b"\n" + b'{"op_code": 8}\n')
    with pytest.raises(JournalDamaged, match="record 12 is not valid JSON, so the journal is damaged"):
        optuna.load_study(study_name="s", storage=JournalStorage(RunJournal(path)))


def _worker(path: str, count: int) -> None:
    storage = JournalStorage(RunJournal(path))
    _run_trials(storage, count)


def test_processes_append_without_losing_records(tmp_path):
    path = tmp_path / "study.journal"
    optuna.create_study(study_name="s", storage=JournalStorage(RunJournal(path)))
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_worker, args=(str(path), 25)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    trials = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path)))).trials
    assert sorted(t.number for t in trials) == list(range(75))
    assert all(t.state == TrialState.COMPLETE and t.user_attrs == {"note": "a" * 10} for t in trials)


def test_reading_a_run_writes_nothing(tmp_path):
    """The leaderboard may read a run on a read-only disk: opening the journal must not touch it."""
    path = tmp_path / "run" / "study.journal"
    study = _run_trials(JournalStorage(RunJournal(path)), 3)
    os.utime(path, (1_000_000, 1_000_000))
    before = sorted(p.name for p in path.parent.iterdir())
    reread = optuna.load_study(study_name="s", storage=JournalStorage(RunJournal(path)))
    assert _summary(reread) == _summary(study)
    assert path.stat().st_mtime == 1_000_000
    assert sorted(p.name for p in path.parent.iterdir()) == before
