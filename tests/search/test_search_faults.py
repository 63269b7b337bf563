"""A search under real faults, through the real CLI: a dead writer's torn journal record, damage
in the middle of the journal, a full disk (a real small tmpfs), a read-only runs folder.
Nothing already saved may be lost or changed, and each fault is one line, never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pytest
from conftest import run_cli
from faults import assert_one_line_error, fill, remount_read_only, small_tmpfs
from optuna.storages.journal import JournalFileBackend, JournalStorage

from cnnsearch.run.folder import RunDir
from cnnsearch.search.settings import SearchSettings
from cnnsearch.search.setup import open_search
from cnnsearch.search.worker import WorkerLoop

# One candidate family whose weights (~280 KB) are far bigger than what a trial writes to the
# journal and trials/ (~15 KB), so a disk can be left with room for one and not the other.
BIG_WEIGHTS_SPACE = """
[network]
stages = 1
filters = 256
padding = "same"
[stage]
convs = 1
kernel_size = 3
pool = true
[head]
pooling = "gap"
dense_layers = 1
dense_units = 256
[train]
lr = { low = 5e-3, high = 3e-2, log = true }
batch_size = 64
epochs = 1
"""


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs folder with run 'big' and its one finished trial (made in this process: faster)."""
    runs = tmp_path_factory.mktemp("base") / "runs"
    space = runs.parent / "big.toml"
    space.write_text(BIG_WEIGHTS_SPACE)
    settings = SearchSettings(name="big", space=str(space), data="digits", runs_dir=str(runs), trials=1, device="cpu")
    settings.subset = 400
    opened = open_search(settings)
    WorkerLoop(opened.run, opened.info, opened.space, target=1, device="cpu").run_loop()
    assert (runs / "big" / "weights" / "trial_0.pt").stat().st_size > 200_000
    return runs


def _copy(base: Path, runs: Path) -> Path:
    shutil.copytree(base, runs)
    return runs


def _states(runs: Path) -> list[str]:
    """The study as Optuna's own file backend reads it (it refuses any bad line)."""
    path = RunDir(runs, "big").journal_file
    for line in path.read_bytes().split(b"\n")[:-1]:
        json.loads(line)
    study = optuna.load_study(study_name="big", storage=JournalStorage(JournalFileBackend(str(path))))
    return [trial.state.name for trial in study.trials]


def _temp_files(runs: Path) -> list[Path]:
    return [path for path in runs.rglob("*") if ".tmp" in path.name]


def test_a_resume_after_a_torn_journal_tail_repairs_it(base_run: Path, tmp_path: Path) -> None:
    runs = _copy(base_run, tmp_path / "runs")
    journal = RunDir(runs, "big").journal_file
    with open(journal, "ab") as handle:  # a writer killed half-way through a record
        handle.write(b'{"op_code":8,"worker_id":"dead","trial_id":0,"user_attr":{"cur')
    assert run_cli("leaderboard", "big", "--runs-dir", str(runs)).returncode == 0

    result = run_cli("search", "--name", "big", "--trials", "2", "--runs-dir", str(runs))
    assert result.returncode == 0, result.stderr
    assert _states(runs) == ["COMPLETE", "COMPLETE"]
    board = run_cli("leaderboard", "big", "--runs-dir", str(runs))
    assert board.returncode == 0 and "big: 2 trials" in board.stdout, board.stderr


def test_damage_in_the_middle_of_the_journal_is_one_line(base_run: Path, tmp_path: Path) -> None:
    runs = _copy(base_run, tmp_path / "runs")
    journal = RunDir(runs, "big").journal_file
    lines = journal.read_bytes().split(b"\n")
    lines[5] = lines[5][:20]  # record 6 cut short, with records after it
    journal.write_bytes(b"\n".join(lines))
    damaged = journal.read_bytes()
    message = (
        f"{journal}: record 6 is not valid JSON, so the journal is damaged; keep a copy, then cut it back "
        f"to the 5 records before it (`head -n 5 {journal} > {journal}.cut && mv {journal}.cut {journal}`); "
        "the records after it are lost"
    )
    assert_one_line_error(run_cli("leaderboard", "big", "--runs-dir", str(runs)), message, 1)
    assert_one_line_error(run_cli("show", "big", "0", "--runs-dir", str(runs)), message, 1)
    assert journal.read_bytes() == damaged


def test_a_lost_journal_is_one_line_and_not_replaced_by_an_empty_one(base_run: Path, tmp_path: Path) -> None:
    """Before: reading a run whose study.journal was gone created an empty one, so `leaderboard`
    said the run had no study and told the user to start it again (over the loss), and the empty
    file then hid that anything had been lost."""
    runs = _copy(base_run, tmp_path / "runs")
    journal = RunDir(runs, "big").journal_file
    journal.unlink()
    message = (
        f"{journal} is missing: run 'big' recorded its trials there (trials/ keeps a copy of each finished one); "
        "restore it from a backup, or start another run"
    )
    assert_one_line_error(run_cli("leaderboard", "big", "--runs-dir", str(runs)), message, 1)
    assert_one_line_error(run_cli("search", "--name", "big", "--runs-dir", str(runs)), message, 1, alone=False)
    assert not journal.exists()


def test_a_full_disk_stops_the_search_with_one_line_and_loses_nothing(base_run: Path, tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk") as disk:
        runs = _copy(base_run, disk / "runs")
        run_file = runs / "big" / "run.json"
        saved = run_file.read_bytes()
        resume = f"resume with `cnnsearch search --name big --runs-dir {runs}`"

        big = fill(disk)  # nothing left: the resume cannot even note itself in run.json
        result = run_cli("search", "--name", "big", "--trials", "3", "--runs-dir", str(runs))
        assert_one_line_error(result, f"no space left on {disk} while saving {run_file}; free space and {resume}", 1)
        assert run_file.read_bytes() == saved
        assert _states(runs) == ["COMPLETE"] and _temp_files(runs) == []

        # Room for a trial's records, not for its weights: the result is kept, the weights are not.
        big.unlink()
        big = fill(disk, leave=96 * 1024)
        result = run_cli("search", "--name", "big", "--trials", "3", "--runs-dir", str(runs))
        message = f"no space left on {disk} while saving the weights of trial 1; free space and {resume}"
        assert_one_line_error(result, message, 1, alone=False)
        assert _states(runs) == ["COMPLETE", "COMPLETE"], "the finished trial is not lost"
        assert json.loads((runs / "big" / "trials" / "1.json").read_text())["outcome"] == "complete"
        assert _temp_files(runs) == [] and not (runs / "big" / "weights" / "trial_1.pt").exists()

        big.unlink()  # space again: the command from the message finishes the run
        result = run_cli("search", "--name", "big", "--runs-dir", str(runs))
        assert result.returncode == 0, result.stderr
        assert _states(runs) == ["COMPLETE"] * 3 and _temp_files(runs) == []
        assert (runs / "big" / "weights" / "trial_2.pt").is_file()


def test_a_read_only_runs_folder_is_read_and_refuses_writes_in_one_line(base_run: Path, tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk") as disk:
        runs = _copy(base_run, disk / "runs")
        remount_read_only(disk)
        for command, shown in (
            (("leaderboard", "big"), "big: 1 trials"),
            (("show", "big", "0"), "complete"),
            (("runs",), "big"),
        ):
            result = run_cli(*command, "--runs-dir", str(runs))
            assert result.returncode == 0 and shown in result.stdout, (command, result.stderr)
            assert result.stderr == "", (command, result.stderr)

        result = run_cli("report", "big", "--runs-dir", str(runs))
        message = (
            f"cannot write the report: {runs / 'big'} is on a read-only file system; "
            "copy the run folder somewhere writable and pass --runs-dir there"
        )
        assert_one_line_error(result, message, 2)
        result = run_cli("search", "--name", "big", "--trials", "2", "--runs-dir", str(runs))
        message = f"--runs-dir {runs} is on a read-only file system; pass a writable folder with --runs-dir DIR"
        assert_one_line_error(result, message, 2)
