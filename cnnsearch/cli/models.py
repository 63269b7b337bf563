"""The commands that make and use models: `export`, `rerun`, `predict` and `finetune`."""

from __future__ import annotations

import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from cnnsearch.cli.app import DeviceOption, Format, RunsDir, Runtime, app, err, info, out
from cnnsearch.cli.view import format_seconds
from cnnsearch.words import count


class ExportInterrupted(BaseException):
    """Ctrl-C (or SIGTERM) during an export. Not a KeyboardInterrupt: Lightning turns that into a silent exit 1."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextmanager
def _stopped_on_signal(what: str, clean_up: Callable[[], str] | None = None) -> Iterator[None]:
    """On Ctrl-C or SIGTERM (`timeout`, systemd, docker stop, Slurm): `clean_up()` (which says what
    it removed), one line, exit 128 + the signal (130, 143). Lightning's own SIGTERM handling
    otherwise ended a training as 'interrupted', and the command 0 or with a traceback."""

    def handler(signum: int, frame: object) -> None:
        raise ExportInterrupted(signum)

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except ExportInterrupted as stopped:
        for signum in previous:
            signal.signal(signum, signal.SIG_IGN)  # a second signal must not stop the clean-up
        removed = clean_up() if clean_up is not None else ""
        err.print(Text(f"{what} interrupted" + (f" while {removed}" if removed else "")), highlight=False)
        raise typer.Exit(128 + stopped.signum) from None
    finally:
        for signum, handler_before in previous.items():
            signal.signal(signum, handler_before)


def _removed_on_ctrl_c(out_dir: Path, doing: list[str], what: str = "export") -> AbstractContextManager[None]:
    """_stopped_on_signal that says what was being done and removes what this export created under
    `out_dir`: the folders it made, or in a folder that existed only the model files it writes
    (never what other processes wrote there meanwhile)."""
    from cnnsearch.export.model_files import is_export_file

    existed = out_dir.exists()
    top = out_dir  # the highest folder this export will create (mkdir makes the parents too)
    while not existed and not top.parent.exists() and top.parent != top:
        top = top.parent
    before = set(out_dir.iterdir()) if existed and out_dir.is_dir() else set()

    def clean_up() -> str:
        if not existed:
            shutil.rmtree(top, ignore_errors=True)
            return f"{doing[0]}; removed {top}, which it had created"
        created = [path for path in set(out_dir.iterdir()) - before if is_export_file(path.name)]
        for path in created:
            path.unlink(missing_ok=True)
        return f"{doing[0]}; removed the {count(len(created), 'file')} it had written to {out_dir}"

    return _stopped_on_signal(what, clean_up)


@contextmanager
def exporting(out_dir: Path, what: str = "export") -> Iterator[Callable[[str], None]]:
    """An export's messages (shown, and remembered for the Ctrl-C note); a Ctrl-C removes its half-written folder."""
    doing = ["starting"]

    def on_message(message: str) -> None:
        doing[0] = message
        info(message)

    with _removed_on_ctrl_c(out_dir, doing, what):
        yield on_message


@contextmanager
def final_progress(console: Console) -> Iterator[Callable[[Any], None]]:
    """A progress bar of the final training on a terminal (epoch, loss, time left); a line per epoch otherwise."""
    from rich.progress import BarColumn, Progress, TextColumn

    if not console.is_terminal:

        def line(progress: Any) -> None:
            console.print(
                f"final training epoch {progress.epoch}/{progress.epochs}  loss {progress.loss:.4f}  "
                f"left ~{format_seconds(progress.left_s)}",
                highlight=False,
            )

        yield line
        return
    bar = Progress(TextColumn("final training"), BarColumn(), TextColumn("{task.description}"), console=console)
    task = bar.add_task("starting", total=None)
    with bar:

        def update(progress: Any) -> None:
            bar.update(
                task,
                total=progress.epochs,
                completed=progress.epoch,
                description=f"epoch {progress.epoch}/{progress.epochs}  loss {progress.loss:.4f}  "
                f"left ~{format_seconds(progress.left_s)}",
            )

        yield update


class Choose(StrEnum):
    """How export picks among the trials when no --trial is named (cnnsearch.export.options.CHOICES)."""

    cheapest_tied = "cheapest-tied"
    best = "best"


@app.command()
def export(
    name: Annotated[str, typer.Argument(help="Run name.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the model into.")],
    trial: Annotated[str, typer.Option("--trial", help="best, or a trial number.")] = "best",
    retrain_epochs: Annotated[
        int | None,
        typer.Option(
            "--final-epochs",
            "--retrain-epochs",
            help="Epochs of the final training on train+validation. [default: 3x the search's epochs]",
        ),
    ] = None,
    final_budget: Annotated[
        str | None,
        typer.Option(
            "--final-budget",
            help="Fit the final training to this time instead, e.g. 5m (epochs from the trial's measured speed, "
            "at most 10x the search's; re-planned at the pace the final training measures; with --top, counted "
            "from the end of the confirmation).",
        ),
    ] = None,
    formats: Annotated[
        str, typer.Option("--format", help="Comma-separated: onnx, torchscript, pt.")
    ] = "onnx,torchscript,pt",
    top: Annotated[
        int | None, typer.Option("--top", help="First confirm the choice: retrain the M best candidates…")
    ] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="…K times each and pick by mean validation accuracy.")] = 3,
    no_retrain: Annotated[
        bool,
        typer.Option("--no-retrain", help="Use the trial's saved weights instead of retraining on train+validation."),
    ] = False,
    choose: Annotated[
        Choose | None,
        typer.Option(
            "--choose",
            help="Without --trial: best (default) takes the highest validation accuracy; cheapest-tied takes the "
            "trial with the fewest FLOPs (then params) among those tied with it within the noise of the validation "
            "set's size (the leaderboard's ≈). With --top the mean over seeds decides.",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output folder.")] = False,
    device: DeviceOption = "auto",
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Retrain the best (or a chosen) candidate, test it once, write and verify model files."""
    from cnnsearch.errors import UserError

    named = trial.strip().lower() != "best"
    if choose is not None and (named or top is not None):  # refused before torch is imported
        other = f"--trial {trial}" if named else f"--top {top}"
        raise UserError(f"--choose picks among the search's trials, so it has no effect with {other}; drop one of them")
    from cnnsearch.export.options import DEFAULT_CHOICE, check_export_options, check_out_folder
    from cnnsearch.run.folder import RunDir
    from cnnsearch.search.settings import parse_duration

    options: dict[str, Any] = {
        "trial": trial,
        "choose": choose.value if choose is not None else DEFAULT_CHOICE,
        "retrain_epochs": retrain_epochs,
        "final_budget_s": parse_duration(final_budget, option="--final-budget"),
        "formats": tuple(part.strip() for part in formats.split(",") if part.strip()),
        "top": top,
        "seeds": seeds,
        "no_retrain": no_retrain,
    }
    check_export_options(**options)  # a bad option is refused in a fraction of a second: torch comes after
    run = RunDir(runs_dir, name)
    run.read_info()  # an unknown run, too
    check_out_folder(out_dir, force=force)
    _export_and_print(run, out_dir, **options, force=force, device=device)


def export_best(run: Any, out_dir: Path, deadline: float | None, device: str) -> None:
    """`search --export`: the best model, trained in the time the search left (all of it without --timeout)."""
    from cnnsearch.export.schedule import FINAL_MARGIN_S

    budget = None if deadline is None else max(1.0, deadline - time.monotonic() - FINAL_MARGIN_S)
    info(f"exporting the best model of run {run.name!r} to {out_dir}" + (f" in ~{budget:.0f} s" if budget else ""))
    _export_and_print(run, out_dir, final_budget_s=budget, device=device, weights_when_short=True)


def _export_and_print(run: Any, out_dir: Path, **options: Any) -> None:
    """`export_run` with the CLI's messages, progress bar and Ctrl-C clean-up, then its summary."""
    from cnnsearch.export.retrain import export_run

    with exporting(out_dir) as on_message, final_progress(err) as on_progress:
        result = export_run(run, out=out_dir, on_message=on_message, on_progress=on_progress, **options)
    for line in result.summary_lines():
        out.print(Text(line), highlight=False)


@app.command()
def rerun(
    name: Annotated[str, typer.Argument(help="Run name.")],
    trial: Annotated[int, typer.Argument(help="Trial number.")],
    device: DeviceOption = "auto",
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Retrain one trial from the run folder (spec, split, seed) and compare with the recorded accuracy."""
    from cnnsearch.run.folder import RunDir

    run = RunDir(runs_dir, name)
    run.read_info()  # an unknown run is refused before torch is imported
    from cnnsearch.export.rerun import rerun_trial

    with _stopped_on_signal(f"rerun of trial {trial}"):
        result = rerun_trial(run, trial, device=device)
    out.print(Text(result.summary()), highlight=False)


@app.command()
def predict(
    model_dir: Annotated[Path, typer.Argument(help="An exported model folder.")],
    images: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    runtime: Annotated[
        Runtime, typer.Option("--runtime", help="torch, or onnx (needs only onnxruntime).")
    ] = Runtime.torch,
    fmt: Annotated[Format, typer.Option("--format", help="table, csv, json or markdown.")] = Format.table,
) -> None:
    """Classify images with an exported model, applying its saved preprocessing."""
    from cnnsearch.predict import predict_paths, predictions_table, predictions_text

    predictions = predict_paths(model_dir, images, runtime=runtime.value)
    if fmt == Format.table:
        out.print(predictions_table(predictions))
    else:
        sys.stdout.write(predictions_text(predictions, fmt.value))


@app.command()
def finetune(
    model_dir: Annotated[Path, typer.Argument(help="An exported model folder.")],
    data: Annotated[str, typer.Option("--data", help="The new dataset (same specs as search).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the fine-tuned model.")],
    epochs: Annotated[int, typer.Option("--epochs", help="Epochs of fine-tuning.")] = 5,
    freeze: Annotated[
        bool, typer.Option("--freeze/--no-freeze", help="Freeze the convolutional stages; train only the new head.")
    ] = False,
    lr: Annotated[
        float | None, typer.Option("--lr", help="Learning rate (default: a tenth of the model's own).")
    ] = None,
    data_dir: Annotated[str | None, typer.Option("--data-dir", help="Where dataset files are.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output folder.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split and the training.")] = 0,
    device: DeviceOption = "auto",
) -> None:
    """Transfer an exported network to new data: new head, optional frozen stages, export again."""
    from cnnsearch.export.options import check_finetune_options

    check_finetune_options(model_dir, out_dir, epochs=epochs, lr=lr, force=force)  # before torch is imported
    from cnnsearch.export.finetune import finetune_model

    with exporting(out_dir, "fine-tuning") as on_message:  # Ctrl-C, SIGTERM: says so, removes what it made
        result = finetune_model(
            model_dir,
            data=data,
            out=out_dir,
            epochs=epochs,
            freeze=freeze,
            lr=lr,
            data_dir=data_dir,
            force=force,
            seed=seed,
            device=device,
            on_message=on_message,
        )
    for line in result.summary_lines():
        out.print(Text(line), highlight=False)
