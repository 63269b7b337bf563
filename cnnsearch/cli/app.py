"""The command line's shell: the Typer app, the two consoles, shared options, and `main`.

The CLI is thin: each command parses its options, calls one library function and prints what
comes back. Commands live by concern in `cli.search`, `cli.worker`, `cli.results`, `cli.models` and
`cli.space`; `cli.view` draws a running search. Heavy imports (torch, Lightning, Optuna,
pandas) happen inside the commands so that `cnnsearch --help` answers at once. Data goes to
stdout, messages to stderr; a `UserError` becomes one line on stderr and exit code 2, never a
traceback; a `RunFault` (a full disk, a damaged journal) is one line and exit code 1. Nothing
below the CLI imports it.
"""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from cnnsearch import __version__
from cnnsearch.errors import DiskFull, RunFault, UserError, is_disk_full

app = typer.Typer(
    name="cnnsearch",
    help="Search for convolutional image classifiers: sample architectures from a space, "
    "train them with pruning, rank them, export the best.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
space_app = typer.Typer(help="Check, show and sample search-space files.", no_args_is_help=True)
app.add_typer(space_app, name="space")


# Data goes to stdout; a pipe or log file gets a wide fixed width instead of rich's 80 columns.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)  # messages


def _print_version(value: bool) -> None:
    if value:
        out.print(Text(f"cnnsearch {__version__}"), highlight=False)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True),
    ] = False,
) -> None:
    """Options of the program itself (`--version`); the help text above the commands is the app's."""


RunsDir = Annotated[Path, typer.Option("--runs-dir", help="Folder that holds the runs.", envvar="CNNSEARCH_RUNS_DIR")]
DeviceOption = Annotated[
    str,
    typer.Option(
        "--device",
        help="auto (GPU when present), cpu, cuda or cuda:N. CNNSEARCH_DEVICE_PLAN forces the GPU's "
        "channels-last, bf16 autocast or micro-batches on any device (README, Development).",
    ),
]
CheckpointEvery = Annotated[
    str | None,
    typer.Option(
        "--checkpoint-every",
        help="Save a running trial's resume checkpoint at most this often (e.g. 30s, 5m), or `epoch` for after every epoch. A killed trial resumes from it. [default: 30s]",
    ),
]


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    markdown = "markdown"


class Runtime(StrEnum):
    torch = "torch"
    onnx = "onnx"


def info(message: str) -> None:
    err.print(Text(message), highlight=False)


def runs_flag(run) -> str:  # noqa: ANN001
    """` --runs-dir DIR` for hints, unless the runs are in the default place."""
    return "" if Path(run.runs_dir) == Path("runs") else f" --runs-dir {run.runs_dir}"


def _show_data_warnings_plainly() -> None:
    """cnnsearch's own warnings (skipped files…) and notices (a restored run.json) as one line on
    stderr, without a source line."""
    import warnings

    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        if category.__name__ == "DataWarning":
            err.print(Text(f"warning: {message}", style="yellow"), highlight=False)
        elif category.__name__ == "Notice":
            err.print(Text(str(message)), highlight=False)
        else:
            original(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def main() -> None:
    """Entry point: UserError -> one line on stderr, exit 2; a RunFault (full disk, damaged
    journal) -> one line, exit 1."""
    # Idle OpenMP threads sleep instead of spinning: with spinning, a CPU search slows down
    # many times over as soon as anything else runs on the machine (measured in bench/).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _show_data_warnings_plainly()
    try:
        try:
            app()
        except OSError as error:
            if is_disk_full(error):  # a write no layer below named: say which file it was
                raise DiskFull(error.filename or Path.cwd()) from None
            raise
    except (UserError, RunFault) as error:
        err.print(Text(f"error: {error}", style="red"), highlight=False)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
