"""Owns the kinds of failure a user can meet, and the one a candidate can.

`UserError` stops a command before anything runs (bad file, unknown run, bad option): the CLI
prints its one-sentence message and exits 2, without a traceback. `SpaceError` is the
`UserError` of a space file; its message lists every problem with its place.
`RunFault` is a fault of the disk or of a run's own files, not of what the user typed: a full
disk (`DiskFull`), a damaged journal (`JournalDamaged`). The CLI prints it as one line naming
the file and the fix and exits 1; nothing already saved is changed by it.
`InfeasibleArchitecture` is raised by the shape arithmetic for a candidate that cannot be
built for the data; the search records it as the outcome `infeasible` (PRUNED), never a crash.

Imports only the standard library: importable from anywhere.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

# errno values that mean "the disk is full" (EDQUOT: the user's quota on it is)
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class UserError(Exception):
    """A problem with what the user asked for; the message names it and the fix."""

    exit_code = 2


class SpaceError(UserError):
    """A space file with problems; the message lists every one with its place."""


class Notice(UserWarning):
    """Something cnnsearch did on its own to recover a run (a restored file), said in one line;
    the CLI prints it plainly on stderr."""


class RunFault(Exception):
    """The disk or a run's own files failed; the message names the file and the fix."""

    exit_code = 1  # not 2: the command was right, the disk or the file was not


class JournalDamaged(RunFault):
    """A record in the middle of a journal that is not JSON: nothing can tell what it said."""

    def __init__(self, path: str | Path, record: int) -> None:
        kept = record - 1
        super().__init__(
            f"{path}: record {record} is not valid JSON, so the journal is damaged; keep a copy, then cut it back "
            f"to the {kept} records before it (`head -n {kept} {path} > {path}.cut && mv {path}.cut {path}`); "
            "the records after it are lost"
        )


class DiskFull(RunFault):
    """No space left while saving something; `then` says how to go on once space is freed (the
    search sets it to the resume command)."""

    def __init__(self, path: str | Path, what: str | None = None, *, then: str = "run the command again") -> None:
        super().__init__(str(path))
        self.path = Path(path)
        self.what = what or str(path)
        self.then = then

    def __str__(self) -> str:
        return f"no space left on {mount_point(self.path)} while saving {self.what}; free space and {self.then}"


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS


def mount_point(path: str | Path) -> Path:
    """The mount point of the file system `path` is on (or would be on, if it does not exist)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


class InfeasibleArchitecture(Exception):
    """A candidate that cannot be built for the data's image size or budget.

    Ends the trial as PRUNED (TPE learns from pruned trials, ignores failed ones).
    """


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): the part
    of a library's error that fits in one sentence to the user."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
