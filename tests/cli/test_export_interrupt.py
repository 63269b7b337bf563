"""Ctrl-C or SIGTERM during `cnnsearch export`, for real (the signal to the process while it
retrains): it says what it stopped, exits 128 + the signal and removes what it created, and only that.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from conftest import TINY_SPACE, run_cli, start_cli


def test_ctrl_c_during_export_says_what_stopped_and_removes_only_what_it_created(runs_dir: Path) -> None:
    made = run_cli(
        "search", "--space", str(TINY_SPACE), "--data", "digits", "--epochs", "1", "--trials", "1",
        "--name", "e", "--runs-dir", str(runs_dir),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    kept = runs_dir / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    # SIGTERM (timeout, systemd, docker stop) exited 0 with no model and no word: Lightning's own
    # handler raised a bare SystemExit. And in a folder that existed, the clean-up removed whatever
    # had appeared there meanwhile, other processes' files too.
    for out, signum in ((runs_dir / "new" / "model", signal.SIGINT), (kept, signal.SIGTERM)):
        export = start_cli(
            "export", "e", "--out", str(out), "--retrain-epochs", "50", "--force", "--runs-dir", str(runs_dir)
        )
        assert export.stderr is not None
        first = export.stderr.readline()  # "final training of trial 0: 50 epochs …": the retrain has begun
        assert first.startswith("final training of trial 0: 50 epochs"), first
        (kept / "other_run").mkdir(exist_ok=True)
        (kept / "other_run" / "run.json").write_text("{}")  # another process's, written during the export
        time.sleep(1.0)
        export.send_signal(signum)
        rest = export.communicate(timeout=60)[1]
        assert export.returncode == 128 + signum, rest
        assert "Traceback" not in rest
        lines = rest.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"export interrupted while {first.strip()}; "), rest
        if out == kept:
            assert lines[0].endswith(f"removed the 0 files it had written to {kept}")
            assert sorted(p.name for p in kept.iterdir()) == ["notes.txt", "other_run"]
            assert (kept / "other_run" / "run.json").read_text() == "{}"
        else:
            assert lines[0].endswith(f"removed {runs_dir / 'new'}, which it had created")
            assert not (runs_dir / "new").exists()


def test_sigterm_during_finetune_says_so_and_removes_its_folder(runs_dir: Path) -> None:
    """Before: the training ended 'interrupted' under Lightning's SIGTERM handling and finetune
    raised a RuntimeError (a traceback), leaving its half-made folder."""
    made = run_cli(
        "search", "--space", str(TINY_SPACE), "--data", "digits", "--epochs", "1", "--trials", "1",
        "--name", "f", "--runs-dir", str(runs_dir), "--export", str(runs_dir / "model"),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    out = runs_dir / "tuned"
    tune = start_cli("finetune", str(runs_dir / "model"), "--data", "digits", "--out", str(out), "--epochs", "300")
    assert tune.stderr is not None
    first = tune.stderr.readline()
    assert first.startswith("fine-tuning "), first
    time.sleep(1.0)
    tune.send_signal(signal.SIGTERM)
    rest = tune.communicate(timeout=60)[1]
    assert tune.returncode == 128 + signal.SIGTERM, rest
    assert "Traceback" not in rest and rest.strip().splitlines()[-1].startswith("fine-tuning interrupted while ")
    assert not out.exists()
