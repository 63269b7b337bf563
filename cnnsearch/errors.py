"""Owns the two kinds of failure a user can meet.

`UserError` stops a command before anything runs (bad file, unknown run, bad option):
the CLI prints its one-sentence message and exits 2, without a traceback.
`TrialFailure`-style outcomes are not exceptions here: a failing candidate is a
recorded result, never a crash (see `train.TrialResult`).
"""
from __future__ import annotations


class UserError(Exception):
    """A problem with what the user asked for; the message names it and the fix."""

    exit_code = 2


class InfeasibleArchitecture(Exception):
    """A candidate that cannot be built for the data's image size or budget.

    Ends the trial as PRUNED (TPE learns from pruned trials, ignores failed ones).
    """
