"""Faults made for real: a small tmpfs to fill up or make read-only, and the one-line error check.

Mounting needs root (the CI container runs as root); where it fails the test is skipped with
the reason `mount` gave.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_tmpfs(path: Path, size: str = "8m") -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` (created), unmounted again afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount_read_only(path: Path) -> None:
    done = subprocess.run(["mount", "-o", "remount,ro", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot remount the tmpfs read-only: {done.stderr.strip()}")


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def fill(mount: Path, *, leave: int = 0) -> Path:
    """Fill the file system at `mount` with one big file, leaving about `leave` bytes free."""
    big = mount / "fill"
    with open(big, "ab") as handle:
        want = free_bytes(mount) - leave
        chunk = b"\0" * (1 << 20)
        try:
            while want > 0:
                written = handle.write(chunk[: min(want, len(chunk))])
                handle.flush()
                want -= written
        except OSError:  # full before `want` was reached: that is full enough
            pass
    return big


def assert_one_line_error(
    result: subprocess.CompletedProcess, message: str, exit_code: int, *, alone: bool = True
) -> None:
    """The command failed with `message` as the last line on stderr (the only one when `alone`:
    a search prints its progress first), and no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert (lines if alone else lines[-1:]) == [f"error: {message}"], result.stderr
    assert result.returncode == exit_code, (result.returncode, result.stderr)
