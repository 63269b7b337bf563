"""The commands that read runs: `runs`, `leaderboard`, `show` and `report`."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from cnnsearch.cli.app import Format, RunsDir, app, info, out
from cnnsearch.errors import UserError

TABLE_ROWS = 30  # leaderboard rows on a terminal unless --top is given


@app.command()
def runs(runs_dir: RunsDir = Path("runs")) -> None:
    """List the runs: data, trials done/pruned/failed, best accuracy, last activity."""
    from cnnsearch.results.runs import runs_frame, runs_table

    frame = runs_frame(runs_dir)
    out.print(runs_table(frame))


@app.command()
def leaderboard(
    name: Annotated[str, typer.Argument(help="Run name.")],
    top: Annotated[int | None, typer.Option("--top", help="Show the N best.")] = None,
    sort: Annotated[
        str | None,
        typer.Option("--sort", help="Sort by this column (val_acc, params, flops, latency_ms, train_s, …)."),
    ] = None,
    all_trials: Annotated[
        bool, typer.Option("--all", help="Include pruned and failed trials with their reason.")
    ] = False,
    fmt: Annotated[Format, typer.Option("--format", help="table, csv, json or markdown.")] = Format.table,
    out_file: Annotated[Path | None, typer.Option("--out", help="Write csv/json/markdown to this file.")] = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Refresh in place while the search runs (Ctrl-C to leave).")
    ] = False,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Rank a run's trials by validation accuracy (or Pareto rank), each with its 95% interval;
    ≈ marks the trials tied with the best within that noise. `training` gives each trial's
    optimiser, learning rate, weight decay, batch and augmentation (on a terminal, where it fits)."""
    from cnnsearch.results.leaderboard import Board, board_notes, leaderboard_rows, sort_and_cut, tie_note
    from cnnsearch.results.render import leaderboard_table
    from cnnsearch.run.folder import RunDir

    run = RunDir(runs_dir, name)
    run.read_info()
    if out_file is not None and not out_file.parent.is_dir():
        raise UserError(
            f"--out {out_file}: the folder {out_file.parent} does not exist; create it or choose another path"
        )
    if watch:
        _watch(run)
        return
    # Plain rows: the table needs no pandas (0.15-0.2 s of start-up); csv / json / markdown do.
    full = leaderboard_rows(run, include_all=all_trials)
    if fmt == Format.table and top is None and out_file is None and len(full) > TABLE_ROWS:
        top = TABLE_ROWS  # a terminal shows the head; --top N or --format csv give more
        info(f"showing the best {TABLE_ROWS} of {len(full)} trials; --top N for more")
    frame = sort_and_cut(full, sort=sort, top=top)
    if fmt == Format.table:
        table = leaderboard_table(
            frame, title=f"{name}: {len(frame)} trials", width=out.width if out_file is None else 200
        )
        ties = tie_note(full)  # of the whole board: --top and --sort cut and reorder only what is shown
        notes = [Text(ties, style="dim")] if ties is not None and not frame.empty else []
        notes += [Text(note, style="dim") for note in board_notes(frame)] if isinstance(frame, Board) else []
        if out_file is None:
            out.print(table)
            for note in notes:
                out.print(note, highlight=False)
            return
        with out_file.open("w") as handle:
            file_console = Console(file=handle, width=200, color_system=None)
            file_console.print(table)
            for note in notes:
                file_console.print(note, highlight=False)
    else:
        from cnnsearch.results.leaderboard import board_frame
        from cnnsearch.results.render import frame_to_text

        text = frame_to_text(board_frame(frame), fmt.value)
        text = text if text.endswith("\n") else text + "\n"
        if out_file is None:
            sys.stdout.write(text)
            return
        out_file.write_text(text)
    info(f"wrote {out_file} ({len(frame)} rows)")


def _watch(run) -> None:
    """Refresh in place on a terminal; elsewhere print the view every 10 s until nothing runs."""
    from cnnsearch.results.watch import watch_view

    try:
        if out.is_terminal:
            from rich.live import Live

            with Live(watch_view(run, width=out.width), console=out, refresh_per_second=1) as live:
                while True:
                    time.sleep(1.0)
                    live.update(watch_view(run, width=out.width))
        import optuna

        from cnnsearch.run.liveness import worker_alive

        running = (optuna.trial.TrialState.RUNNING,)
        while True:
            out.print(watch_view(run, width=out.width))
            # A trial of a killed worker stays RUNNING until a resume recovers it: it is not running.
            if not any(worker_alive(run, t) for t in run.load_study().get_trials(deepcopy=False, states=running)):
                info("no trial is running; stopped watching")
                return
            time.sleep(10.0)
    except KeyboardInterrupt:
        return


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="Run name.")],
    trial: Annotated[int, typer.Argument(help="Trial number.")],
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Print one candidate in full: layers with shapes and parameters, settings, learning curve."""
    from cnnsearch.results.detail import trial_detail
    from cnnsearch.run.folder import RunDir

    out.print(trial_detail(RunDir(runs_dir, name), trial))


@app.command()
def report(
    name: Annotated[str, typer.Argument(help="Run name.")],
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Write runs/NAME/report.html (self-contained, with plots) and the plots as PNG files."""
    from cnnsearch.results.html import write_report
    from cnnsearch.run.folder import RunDir

    path = write_report(RunDir(runs_dir, name))
    info(f"wrote {path}")
