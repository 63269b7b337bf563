"""Owns the two kinds of failure a user can meet, and the one a candidate can.

`UserError` stops a command before anything runs (bad file, unknown run, bad option): the CLI
prints its one-sentence message and exits 2, without a traceback. `SpaceError` is the
`UserError` of a space file; its message lists every problem with its place.
`InfeasibleArchitecture` is raised by the shape arithmetic for a candidate that cannot be
built for the data; the search records it as the outcome `infeasible` (PRUNED), never a crash.

Imports nothing: importable from anywhere.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with what the user asked for; the message names it and the fix."""

    exit_code = 2


class SpaceError(UserError):
    """A space file with problems; the message lists every one with its place."""


class Notice(UserWarning):
    """Something cnnsearch did on its own to recover a run (a restored file), said in one line;
    the CLI prints it plainly on stderr."""


class InfeasibleArchitecture(Exception):
    """A candidate that cannot be built for the data's image size or budget.

    Ends the trial as PRUNED (TPE learns from pruned trials, ignores failed ones).
    """


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): the part
    of a library's error that fits in one sentence to the user."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
