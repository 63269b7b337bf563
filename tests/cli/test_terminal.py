"""The live view in a real pseudo-terminal (tmux), at 80 and 160 columns, and Ctrl-C inside it."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TINY_SPACE, cli_env

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")


def _screen(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout


def _wait_for(session: str, text: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        screen = _screen(session)
        if text in screen:
            return screen
        time.sleep(0.2)
    raise AssertionError(f"{text!r} did not appear within {timeout:.0f} s; the screen was:\n{_screen(session)}")


@pytest.mark.parametrize("width", [80, 160])
def test_live_view_fits_the_terminal_and_ctrl_c_says_what_it_does(width: int, tmp_path: Path) -> None:
    session = f"cnnsearch-test-{width}-{tmp_path.name}"
    env = " ".join(f"{key}={shlex.quote(value)}" for key, value in cli_env().items() if key in ("PATH", "HOME", "OMP_NUM_THREADS", "PYTHONUNBUFFERED"))  # fmt: skip
    command = (
        f"cd {shlex.quote(str(ROOT))} && env {env} {shlex.quote(sys.executable)} -m cnnsearch search --space "
        f"{shlex.quote(str(TINY_SPACE))} --data digits --name t --trials 3 --epochs 40 --device cpu "
        f"--runs-dir {shlex.quote(str(tmp_path))}; echo exit=$?; sleep 60"
    )
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", str(width), "-y", "40", command], check=True)
    try:
        screen = _wait_for(session, "val acc", timeout=120)  # a trial is training
        lines = screen.splitlines()
        # tmux crops what does not fit: the whole of each line must be there, ends included.
        assert any(
            line.startswith("search t ") and line.rstrip().endswith(("s", "—")) and "left ~" in line for line in lines
        ), screen
        assert any(line.rstrip().endswith("duplicates") for line in lines), screen
        (header,) = [line for line in lines if line.startswith("trial")]
        assert header.split() == ["trial", "candidate", "epoch", "val", "acc", "predicted", "device"], screen
        bars = [line.strip() for line in lines if line.strip() and set(line.strip()) <= set("━╸╺ ")]
        assert bars, f"the overall bar has no line of its own:\n{screen}"
        subprocess.run(["tmux", "send-keys", "-t", session, "C-c"], check=True)
        screen = _wait_for(session, "exit=", timeout=120)
        assert "stopping after saving the running trial's state" in screen, screen
        assert "exit=130" in screen, screen
        assert "resume with `cnnsearch search --name t" in screen.replace("\n", ""), screen
        assert all(len(line) <= width for line in screen.splitlines())
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
