"""Shared test helpers: run the real CLI in a subprocess, read a run's study."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)  # the same for the tests that train in this process

ROOT = Path(__file__).resolve().parents[1]
TINY_SPACE = ROOT / "search_spaces" / "tiny.toml"


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("CNNSEARCH_RUNS_DIR", None)
    env["PYTHONUNBUFFERED"] = "1"
    # One intra-op thread per process: tiny CNNs gain nothing from more on 2 cores, and a
    # spinning second thread is many times slower whenever anything else shares the machine.
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_cli(*args: str, timeout: float = 240, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`cnnsearch ARGS` as a user would run it; stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "cnnsearch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(),
        cwd=cwd or ROOT,
    )


def start_cli(*args: str, cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cnnsearch", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        cwd=cwd or ROOT,
    )


def load_study(runs_dir: Path, name: str):
    from cnnsearch.run.folder import RunDir

    return RunDir(runs_dir, name).load_study()


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    path = tmp_path / "runs"
    path.mkdir()
    return path
