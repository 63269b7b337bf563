"""The journal and the runs folder under real faults: a dead writer's torn record, damage in the
middle, a full disk (a real small tmpfs), a runs folder that is a file or read-only."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from conftest import run_cli
from faults import assert_one_line_error, fill, remount_read_only, small_tmpfs
from optuna.storages.journal import JournalFileBackend, JournalStorage

import cnnsearch.errors as errors
from cnnsearch.run.journal import RunJournal

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _trials(storage, count: int) -> optuna.Study:
    study = optuna.create_study(study_name="s", storage=storage, load_if_exists=True)
    for _ in range(count):
        trial = study.ask()
        study.tell(trial, trial.suggest_float("x", -1, 1) ** 2)
    return study


def _records(path: Path) -> list[dict]:
    """Every line of the file as JSON: a torn or merged line fails here."""
    return [json.loads(line) for line in path.read_bytes().split(b"\n")[:-1]]


@pytest.mark.parametrize(
    "tail",
    [
        b'{"op_code": 4, "worker_id": "dead-wri',  # killed mid-write: no newline yet
        b"\0\0\0\0\0\0\n",  # a power cut: the size grew, the data never came
    ],
    ids=["killed-mid-write", "power-cut"],
)
def test_the_next_writer_cuts_a_dead_writers_torn_tail(tmp_path, tail):
    path = tmp_path / "study.journal"
    _trials(JournalStorage(RunJournal(path)), 2)
    complete = path.read_bytes()
    with open(path, "ab") as handle:
        handle.write(tail)
    assert len(optuna.load_study(study_name="s", storage=JournalStorage(RunJournal(path))).trials) == 2

    _trials(JournalStorage(RunJournal(path)), 1)  # the next writer, under the lock

    assert path.read_bytes().startswith(complete)
    records = _records(path)
    assert len(records) > complete.count(b"\n")  # the new trial's, each on its own line
    reread = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))))
    assert [t.state.name for t in reread.trials] == ["COMPLETE"] * 3


def test_damage_in_the_middle_names_the_file_the_record_and_the_fix(tmp_path):
    path = tmp_path / "study.journal"
    _trials(JournalStorage(RunJournal(path)), 2)
    lines = path.read_bytes().split(b"\n")
    lines[3] = b'{"op_code": 5, "trial_id": 0, "par'  # not the last line: nothing can tell what it was
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(errors.JournalDamaged) as raised:
        optuna.load_study(study_name="s", storage=JournalStorage(RunJournal(path)))
    assert str(raised.value) == (
        f"{path}: record 4 is not valid JSON, so the journal is damaged; keep a copy, then cut it back "
        f"to the 3 records before it (`head -n 3 {path} > {path}.cut && mv {path}.cut {path}`); "
        "the records after it are lost"
    )


def test_a_failed_append_leaves_the_journal_as_it_was(tmp_path):
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        path = disk / "study.journal"
        study = _trials(JournalStorage(RunJournal(path)), 2)
        big = fill(disk)
        before = path.read_bytes()
        with pytest.raises(errors.DiskFull) as raised:  # 64 KiB: more than the last page has left
            study.set_user_attr("note", "n" * 65536)
        assert str(raised.value) == (
            f"no space left on {disk} while saving {path}; free space and run the command again"
        )
        assert path.read_bytes() == before  # no short write left behind
        assert path.stat().st_size == len(before)

        big.unlink()  # space again: the same study goes on
        study.set_user_attr("note", "n" * 65536)
        _trials(JournalStorage(RunJournal(path)), 1)
        reread = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))))
        assert len(reread.trials) == 3 and reread.user_attrs["note"] == "n" * 65536


def test_a_runs_dir_that_is_a_file_is_one_line(tmp_path):
    runs = tmp_path / "runs.txt"
    runs.write_text("not a folder\n")
    message = f"--runs-dir {runs} is a file, not a folder; pass the folder that holds the runs (default runs/)"
    for command in (
        ("runs",),
        ("leaderboard", "demo"),
        ("search", "--space", "tiny", "--epochs", "1", "--trials", "1", "--name", "demo"),
    ):
        assert_one_line_error(run_cli(*command, "--runs-dir", str(runs)), message, 2)
    assert runs.read_text() == "not a folder\n"


def test_a_search_in_a_read_only_runs_dir_is_one_line(tmp_path):
    with small_tmpfs(tmp_path / "disk") as disk:
        remount_read_only(disk)
        runs = disk / "runs"  # to be made there
        result = run_cli("search", "--space", "tiny", "--trials", "1", "--name", "demo", "--runs-dir", str(runs))
        message = f"--runs-dir {runs} is on a read-only file system; pass a writable folder with --runs-dir DIR"
        assert_one_line_error(result, message, 2)
