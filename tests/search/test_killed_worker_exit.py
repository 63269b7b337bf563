"""A worker SIGKILLed during a `--workers 2` search, for real: the other worker re-runs its
trial, the search reaches its total and exits 0, and says which worker died, how, and what
became of its trial.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import optuna
from conftest import TINY_SPACE, load_study, start_cli

from cnnsearch.run.folder import RunDir
from cnnsearch.search.progress import counted_trials


def test_a_sigkilled_worker_is_named_and_the_search_ends_well(runs_dir: Path) -> None:
    search = start_cli(
        "search", "--space", str(TINY_SPACE), "--data", "digits", "--epochs", "2", "--trials", "3",
        "--workers", "2", "--device", "cpu", "--checkpoint-every", "epoch", "--name", "k", "--runs-dir", str(runs_dir),
    )  # fmt: skip
    victim = None
    deadline = time.monotonic() + 120
    try:
        while victim is None and time.monotonic() < deadline:
            time.sleep(0.2)
            if not RunDir(runs_dir, "k").exists():
                continue
            running = load_study(runs_dir, "k").get_trials(states=(optuna.trial.TrialState.RUNNING,))
            workers = [t.user_attrs["worker"] for t in running if "worker" in t.user_attrs]
            if workers:
                victim = (int(workers[0].rsplit(":", 1)[1]), running[0].number)
        assert victim is not None, "no worker started a trial"
        os.kill(victim[0], signal.SIGKILL)
        stdout, stderr = search.communicate(timeout=240)
    finally:
        if search.poll() is None:
            search.kill()
    assert search.returncode == 0, stderr
    assert "Traceback" not in stderr and "stopped with an error" not in stderr
    killed = [line for line in stderr.splitlines() if "was killed by SIGKILL" in line]
    assert len(killed) == 1, stderr
    assert killed[0].endswith(
        f"(pid {victim[0]}) was killed by SIGKILL; its trial {victim[1]} was re-run by the other workers"
    )
    assert killed[0].startswith(("worker 0 ", "worker 1 "))
    assert len(counted_trials(load_study(runs_dir, "k"))) == 3
