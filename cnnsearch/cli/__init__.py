"""The command line: `cnnsearch` (see `cli.app`). Importing this package registers every command.

Commands are listed by `--help` in the order they are registered here: search first, then the
results, then the models; the `space` group was added by `cli.app`.
"""

# ruff: noqa: I001  (the import order is the order of `cnnsearch --help`)
from __future__ import annotations

from cnnsearch.cli import search  # noqa: F401  (each module registers its commands)
from cnnsearch.cli import worker  # noqa: F401
from cnnsearch.cli import results  # noqa: F401
from cnnsearch.cli import models  # noqa: F401
from cnnsearch.cli import space  # noqa: F401
from cnnsearch.cli.app import app, main

__all__ = ["app", "main"]
