"""Owns opening a run's Optuna storage: the local journal file, or an RDB (PostgreSQL, MySQL)
that fails fast with one sentence when it cannot be reached.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cnnsearch.errors import UserError, first_line


def open_storage(url: str, *, journal_path: Path) -> Any:
    """Optuna storage for a run: a journal file locally, an RDB for several machines."""
    from optuna.storages.journal import JournalStorage

    from cnnsearch.run.journal import RunJournal

    if url == "journal":
        return JournalStorage(RunJournal(journal_path))
    return rdb_storage(url)


def rdb_storage(
    url: str,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    failed_trial_callback: Any = None,
) -> Any:
    """An RDB storage that fails fast with one clear sentence when the database can't be reached."""
    import optuna

    if not re.match(r"^(postgresql|mysql|sqlite)(\+\w+)?://", url):
        raise UserError(
            f"storage URL {url!r} is not supported; use postgresql://USER:PASSWORD@HOST:PORT/DB or mysql://…"
        )
    try:
        import sqlalchemy

        engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if url.startswith("postgresql"):
            engine_kwargs["connect_args"] = {"connect_timeout": 5}
        # Probe once ourselves: Optuna would otherwise retry and print a long traceback.
        engine = sqlalchemy.create_engine(engine_url(url), **engine_kwargs)
        with engine.connect():
            pass
        engine.dispose()
        return optuna.storages.RDBStorage(
            engine_url(url),
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            failed_trial_callback=failed_trial_callback,
        )
    except ImportError as error:
        raise UserError(
            f"the database driver for {describe_storage(url)} is not installed ({error.name}); pip install psycopg2-binary or pymysql"
        ) from None
    except Exception as error:  # sqlalchemy raises driver-specific errors; all mean "can't connect"
        reason = first_line(getattr(error, "orig", None) or error)
        raise UserError(
            f"cannot connect to storage {describe_storage(url)}: {reason}; check the URL, password and that the server is running"
        ) from None


def engine_url(url: str) -> str:
    """The URL SQLAlchemy connects with: a bare postgresql:// gets the driver that is installed.

    SQLAlchemy 2.1 reads a bare postgresql:// as psycopg (version 3), while the `postgres`
    extra installs psycopg2; the URL the user wrote (run.json, messages) stays as it was.
    """
    if url.startswith("postgresql://"):
        from importlib.util import find_spec

        if find_spec("psycopg") is None and find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def describe_storage(url: str) -> str:
    """The URL with its password hidden, for messages and tables."""
    return re.sub(r"://([^:/@]+):([^@]+)@", r"://\1:***@", url)
