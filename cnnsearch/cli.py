"""The command line: parses, calls one library function per command, prints.

No logic of its own. Heavy imports (torch, Lightning, Optuna, pandas) happen inside the
commands so that `cnnsearch --help` answers at once. Data goes to stdout, messages to
stderr; a `UserError` becomes one line on stderr and exit code 2, never a traceback.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.text import Text

from cnnsearch.errors import UserError

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

TABLE_ROWS = 30  # leaderboard rows on a terminal unless --top is given
RunsDir = Annotated[Path, typer.Option("--runs-dir", help="Folder that holds the runs.", envvar="CNNSEARCH_RUNS_DIR")]
DeviceOption = Annotated[str, typer.Option("--device", help="auto (GPU when present), cpu, cuda or cuda:N.")]
CheckpointEvery = Annotated[Optional[str], typer.Option("--checkpoint-every", help="Save a running trial's resume checkpoint at most this often (e.g. 30s, 5m), or `epoch` for after every epoch. A killed trial resumes from it. [default: 30s]")]


class Sampler(str, Enum):
    tpe = "tpe"
    random = "random"
    gp = "gp"
    cmaes = "cmaes"
    nsga2 = "nsga2"


class Pruner(str, Enum):
    hyperband = "hyperband"
    asha = "asha"
    median = "median"
    none = "none"


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    markdown = "markdown"


class Runtime(str, Enum):
    torch = "torch"
    onnx = "onnx"


def info(message: str) -> None:
    err.print(Text(message), highlight=False)


# ---- search ----------------------------------------------------------------------------------------
@app.command()
def search(
    space: Annotated[Optional[str], typer.Option("--space", help="Search-space TOML file, or a shipped space by name: default, tiny, cifar (a new run without --name: default).")] = None,
    data: Annotated[Optional[str], typer.Option("--data", help="digits, fashion-mnist, mnist, cifar10, cifar100 or folder:PATH (default for a new run: digits).")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Run name; an existing run is resumed (then --space and --data are not needed). Default for a new run: SPACE-DATE.")] = None,
    trials: Annotated[Optional[int], typer.Option("--trials", help="Total trials in the run (resume adds the missing ones). Default 20.")] = None,
    timeout: Annotated[Optional[str], typer.Option("--timeout", help="Budget for this search, e.g. 90s, 20m, 2h; the running trial is stopped at the deadline.")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Epochs per trial (overrides the space's train.epochs).")] = None,
    trial_timeout: Annotated[Optional[str], typer.Option("--trial-timeout", help="Longest a single trial may train, e.g. 60s.")] = None,
    sampler: Annotated[Optional[Sampler], typer.Option("--sampler", help="How candidates are proposed. [default: tpe]")] = None,
    pruner: Annotated[Optional[Pruner], typer.Option("--pruner", help="Stops weak candidates early (multi-fidelity): asha (successive halving, one bracket), hyperband, median or none. [default: asha]")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of the split, the sampler and every trial's training. [default: 0]")] = None,
    device: DeviceOption = "auto",
    runs_dir: RunsDir = Path("runs"),
    data_dir: Annotated[Optional[str], typer.Option("--data-dir", help="Where dataset files are (searched before ~/.cache/cnnsearch and /usr/share/datasets).")] = None,
    image_size: Annotated[Optional[int], typer.Option("--image-size", help="Resize images to this square size.")] = None,
    subset: Annotated[Optional[int], typer.Option("--subset", help="Search on a stratified subset of N training images.")] = None,
    workers: Annotated[int, typer.Option("--workers", help="Worker processes sharing the search (GPUs are shared out; CPU cores split).")] = 1,
    storage: Annotated[Optional[str], typer.Option("--storage", help="postgresql:// or mysql:// URL for a study shared by several machines.")] = None,
    objective: Annotated[Optional[str], typer.Option("--objective", help="accuracy, or a Pareto search: accuracy,params / accuracy,flops / accuracy,latency. [default: accuracy]")] = None,
    enqueue: Annotated[Optional[list[Path]], typer.Option("--enqueue", help="Architecture JSON to train first (repeatable).")] = None,
    from_run: Annotated[Optional[str], typer.Option("--from-run", help="Train the best candidates of another run first.")] = None,
    fork: Annotated[Optional[str], typer.Option("--fork", help="Start a new run with this name, warm-started from the run named by --name.")] = None,
    keep_weights: Annotated[Optional[int], typer.Option("--keep-weights", help="Keep the weights of this many best trials. [default: 3]")] = None,
    download: Annotated[bool, typer.Option("--download", help="Download a missing dataset (fashion-mnist, mnist, cifar).")] = False,
    checkpoint_every: CheckpointEvery = None,
) -> None:
    """Search a space for the best classifier of a dataset; resume a run by naming it."""
    from cnnsearch import search as searching

    timeout_s = searching.parse_duration(timeout)
    trial_timeout_s = searching.parse_duration(trial_timeout)
    checkpoint_every_s = searching.parse_checkpoint_every(checkpoint_every)
    objectives = searching.parse_objective(objective) if objective is not None else None
    if workers < 1:
        raise UserError(f"--workers must be at least 1, but got {workers}")
    if trials is not None and trials < 1:
        raise UserError(f"--trials must be at least 1, but got {trials}")
    if name is None:  # a new run: the defaults make the bare command work
        space = space or "default"
        name = searching.default_run_name(space)
    if space is not None and data is None and not (Path(runs_dir) / name / "run.json").is_file() and not fork:
        data = "digits"
    settings = searching.SearchSettings(
        name=name, space=space, data=data, runs_dir=str(runs_dir), data_dir=data_dir,
        image_size=image_size, subset=subset, trials=trials, timeout_s=timeout_s, epochs=epochs,
        trial_timeout_s=trial_timeout_s, sampler=sampler.value if sampler else None,
        pruner=pruner.value if pruner else None, seed=seed, device=device, storage=storage, objective=objectives,
        keep_weights=keep_weights, enqueue=tuple(str(path) for path in enqueue or ()), from_run=from_run, fork=fork,
        command=searching.command_line(),
    )
    if fork:
        if name is None or not (Path(runs_dir) / name / "run.json").is_file():
            raise UserError("--fork NEW_NAME needs --name of an existing run to start from")
        settings = searching.fork_settings(settings)
    if download and settings.data:
        from cnnsearch.data import load_dataset

        load_dataset(settings.data, data_dir=data_dir, download=True)
    resumed = (Path(runs_dir) / settings.name / "run.json").is_file()
    run, run_info, space_obj = searching.prepare_run(settings)
    target = searching.resolve_target(run, run_info, settings.trials)
    info(f"{'resuming' if resumed else 'started'} run {run.name!r}: {run_info.data}, "
         f"{run_info.split_sizes.get('train')} train / {run_info.split_sizes.get('val')} val images, "
         f"{target} trials, device {run_info.device if workers == 1 else 'shared by ' + str(workers) + ' workers'}")
    for note in searching.enqueue_warm_start_for(run, space_obj, settings):
        info(note)
    interrupted = _run_search(run, run_info, space_obj, target=target, timeout_s=timeout_s, device=device,
                              workers=workers, checkpoint_every_s=checkpoint_every_s)
    _finish_search(run, interrupted)


def _install_sigint(*, quiet: bool = False) -> threading.Event:
    """First Ctrl-C asks for a clean stop (the trial is checkpointed); a second one forces it."""
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        if not quiet:
            err.print("\nstopping after saving the running trial's state (Ctrl-C again to force)…")

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def _run_search(run, run_info, space_obj, *, target: int, timeout_s: float | None, device: str, workers: int,
                checkpoint_every_s: float) -> bool:
    from cnnsearch.progress import ProgressState, SearchView, event_from_trial, start_from_study, state_from_study
    from cnnsearch.search import WorkerLoop

    stop = _install_sigint()
    deadline = time.monotonic() + timeout_s if timeout_s else None
    state = ProgressState(name=run.name, target=target, deadline=deadline)
    study = run.load_study(run_info)
    reported = start_from_study(study, state)
    if workers == 1:
        with SearchView(state, console=out) as view:
            loop = WorkerLoop(run, run_info, space_obj, target=target, deadline=deadline, device=device,
                              on_event=view, should_stop=stop.is_set, checkpoint_every_s=checkpoint_every_s)
            loop.run_loop()
        return stop.is_set() or loop.interrupted
    from cnnsearch.workers import spawn_workers

    processes = spawn_workers(run, workers=workers, target=target, timeout_s=timeout_s, device=device,
                              checkpoint_every_s=checkpoint_every_s)
    with SearchView(state, console=out, live=out.is_terminal) as view:
        while True:
            running = any(process.poll() is None for process in processes)
            if view.live is not None:
                state_from_study(study, state)
                view.refresh()
            else:  # one line per finished trial, in the order they finished
                finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and t.number not in reported]
                for trial in sorted(finished, key=lambda t: t.datetime_complete or t.datetime_start):
                    reported.add(trial.number)
                    view(event_from_trial(trial))
            if not running:
                break
            time.sleep(1.0)
    failed = [process.returncode for process in processes if process.returncode not in (0, 130)]
    if failed:
        raise UserError(f"{len(failed)} worker(s) stopped with an error (exit {failed[0]}); see their messages above, then resume with `cnnsearch search --name {run.name}{_runs_flag(run)}`")
    return stop.is_set()


def _runs_flag(run) -> str:
    """` --runs-dir DIR` for hints, unless the runs are in the default place."""
    return "" if Path(run.runs_dir) == Path("runs") else f" --runs-dir {run.runs_dir}"


def _finish_search(run, interrupted: bool) -> None:
    from cnnsearch.report import leaderboard_frame, leaderboard_table, sort_and_cut
    from cnnsearch.search import summarize

    summary = summarize(run, interrupted=interrupted)
    frame = sort_and_cut(leaderboard_frame(run), sort=None, top=5)
    out.print(leaderboard_table(frame, title=f"{run.name}: top 5", width=out.width))
    counts = ", ".join(f"{count} {outcome}" for outcome, count in sorted(summary.counts.items()))
    info(f"trials: {counts or 'none'}")
    flag = _runs_flag(run)
    info(f"more: cnnsearch leaderboard {run.name}{flag}   |   cnnsearch report {run.name}{flag}   |   cnnsearch export {run.name}{flag} --out model/")
    if interrupted:
        info(f"interrupted: the study is intact; resume with `cnnsearch search --name {run.name}{flag}`")
        raise typer.Exit(130)


@app.command()
def worker(
    name: Annotated[str, typer.Option("--name", help="The run to join.")],
    storage: Annotated[Optional[str], typer.Option("--storage", help="The run's database URL (joins a search started on another machine).")] = None,
    runs_dir: RunsDir = Path("runs"),
    device: DeviceOption = "auto",
    timeout: Annotated[Optional[str], typer.Option("--timeout", help="Stop this worker after this long, e.g. 2h.")] = None,
    worker_index: Annotated[int, typer.Option("--worker-index", help="Distinct per worker: varies the sampler's seed.")] = 0,
    threads: Annotated[Optional[int], typer.Option("--threads", help="Torch CPU threads for this worker.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="Print nothing but errors.")] = False,
    checkpoint_every: CheckpointEvery = None,
) -> None:
    """Join a search as one more worker process (on this machine or another)."""
    from cnnsearch import search as searching
    from cnnsearch.progress import ProgressState, SearchView

    if threads:
        import torch

        torch.set_num_threads(threads)
    run, run_info, space_obj = searching.join_run(runs_dir, name, storage)
    timeout_s = searching.parse_duration(timeout)
    checkpoint_every_s = searching.parse_checkpoint_every(checkpoint_every)
    stop = _install_sigint(quiet=quiet)
    deadline = time.monotonic() + timeout_s if timeout_s else None
    target = searching.resolve_target(run, run_info, None)
    state = ProgressState(name=run.name, target=target, deadline=deadline)
    view = SearchView(state, console=out, live=False) if not quiet else None
    loop = searching.WorkerLoop(run, run_info, space_obj, target=target, deadline=deadline, device=device,
                                worker_index=worker_index, on_event=view, should_stop=stop.is_set,
                                checkpoint_every_s=checkpoint_every_s)
    loop.run_loop()
    if stop.is_set() or loop.interrupted:
        raise typer.Exit(130)
    if not quiet:
        info(f"run {run.name!r} has its {target} trials; this worker is done")


# ---- results -----------------------------------------------------------------------------------------------
@app.command()
def runs(runs_dir: RunsDir = Path("runs")) -> None:
    """List the runs: data, trials done/pruned/failed, best accuracy, last activity."""
    from cnnsearch.report import runs_frame, runs_table

    frame = runs_frame(runs_dir)
    out.print(runs_table(frame))


@app.command()
def leaderboard(
    name: Annotated[str, typer.Argument(help="Run name.")],
    top: Annotated[Optional[int], typer.Option("--top", help="Show the N best.")] = None,
    sort: Annotated[Optional[str], typer.Option("--sort", help="Sort by this column (val_acc, params, flops, latency_ms, train_s, …).")] = None,
    all_trials: Annotated[bool, typer.Option("--all", help="Include pruned and failed trials with their reason.")] = False,
    fmt: Annotated[Format, typer.Option("--format", help="table, csv, json or markdown.")] = Format.table,
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Write csv/json/markdown to this file.")] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh in place while the search runs (Ctrl-C to leave).")] = False,
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Rank a run's trials by validation accuracy (or Pareto rank)."""
    from cnnsearch.report import leaderboard_rows, leaderboard_table, sort_and_cut
    from cnnsearch.rundir import RunDir

    run = RunDir(runs_dir, name)
    run.read_info()
    if out_file is not None and not out_file.parent.is_dir():
        raise UserError(f"--out {out_file}: the folder {out_file.parent} does not exist; create it or choose another path")
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
        table = leaderboard_table(frame, title=f"{name}: {len(frame)} trials", width=out.width if out_file is None else 200)
        if out_file is None:
            out.print(table)
            return
        with out_file.open("w") as handle:
            Console(file=handle, width=200, color_system=None).print(table)
    else:
        from cnnsearch.report import board_frame, frame_to_text

        text = frame_to_text(board_frame(frame), fmt.value)
        text = text if text.endswith("\n") else text + "\n"
        if out_file is None:
            sys.stdout.write(text)
            return
        out_file.write_text(text)
    info(f"wrote {out_file} ({len(frame)} rows)")


def _watch(run) -> None:
    """Refresh in place on a terminal; elsewhere print the view every 10 s until nothing runs."""
    from cnnsearch.report import watch_view

    try:
        if out.is_terminal:
            from rich.live import Live

            with Live(watch_view(run, width=out.width), console=out, refresh_per_second=1) as live:
                while True:
                    time.sleep(1.0)
                    live.update(watch_view(run, width=out.width))
        import optuna

        while True:
            out.print(watch_view(run, width=out.width))
            if not run.load_study().get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
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
    from cnnsearch.report import trial_detail
    from cnnsearch.rundir import RunDir

    out.print(trial_detail(RunDir(runs_dir, name), trial))


@app.command()
def report(
    name: Annotated[str, typer.Argument(help="Run name.")],
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Write runs/NAME/report.html (self-contained, with plots) and the plots as PNG files."""
    from cnnsearch.report import write_report
    from cnnsearch.rundir import RunDir

    path = write_report(RunDir(runs_dir, name))
    info(f"wrote {path}")


@app.command()
def export(
    name: Annotated[str, typer.Argument(help="Run name.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the model into.")],
    trial: Annotated[str, typer.Option("--trial", help="best, or a trial number.")] = "best",
    retrain_epochs: Annotated[Optional[int], typer.Option("--retrain-epochs", help="Epochs of the final retrain (default: the epoch at which the trial was best).")] = None,
    formats: Annotated[str, typer.Option("--format", help="Comma-separated: onnx, torchscript, pt.")] = "onnx,torchscript,pt",
    top: Annotated[Optional[int], typer.Option("--top", help="First confirm the choice: retrain the M best candidates…")] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="…K times each and pick by mean validation accuracy.")] = 3,
    no_retrain: Annotated[bool, typer.Option("--no-retrain", help="Use the trial's saved weights instead of retraining on train+validation.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output folder.")] = False,
    device: DeviceOption = "auto",
    runs_dir: RunsDir = Path("runs"),
) -> None:
    """Retrain the best (or a chosen) candidate, test it once, write and verify model files."""
    from cnnsearch.export import export_run
    from cnnsearch.rundir import RunDir

    result = export_run(RunDir(runs_dir, name), out=out_dir, trial=trial, retrain_epochs=retrain_epochs,
                        formats=tuple(part.strip() for part in formats.split(",") if part.strip()),
                        top=top, seeds=seeds, no_retrain=no_retrain, force=force, device=device, on_message=info)
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
    from cnnsearch.export import rerun_trial
    from cnnsearch.rundir import RunDir

    result = rerun_trial(RunDir(runs_dir, name), trial, device=device)
    out.print(Text(result.summary()), highlight=False)


@app.command()
def predict(
    model_dir: Annotated[Path, typer.Argument(help="An exported model folder.")],
    images: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    runtime: Annotated[Runtime, typer.Option("--runtime", help="torch, or onnx (needs only onnxruntime).")] = Runtime.torch,
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
    freeze: Annotated[bool, typer.Option("--freeze/--no-freeze", help="Freeze the convolutional stages; train only the new head.")] = False,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Learning rate (default: a tenth of the model's own).")] = None,
    data_dir: Annotated[Optional[str], typer.Option("--data-dir", help="Where dataset files are.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output folder.")] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split and the training.")] = 0,
    device: DeviceOption = "auto",
) -> None:
    """Transfer an exported network to new data: new head, optional frozen stages, export again."""
    from cnnsearch.export import finetune_model

    result = finetune_model(model_dir, data=data, out=out_dir, epochs=epochs, freeze=freeze, lr=lr,
                            data_dir=data_dir, force=force, seed=seed, device=device, on_message=info)
    for line in result.summary_lines():
        out.print(Text(line), highlight=False)


# ---- spaces ------------------------------------------------------------------------------------------------------
@space_app.command("check")
def space_check(
    file: Annotated[Path, typer.Argument(help="Space file, or a shipped space by name: default, tiny, cifar.")],
    sample: Annotated[int, typer.Option("--sample", help="Also sample N candidates and report the infeasible share.")] = 0,
    input_shape: Annotated[str, typer.Option("--input", help="Input shape CxHxW for --sample.")] = "1x28x28",
    classes: Annotated[int, typer.Option("--classes", help="Number of classes for --sample.")] = 10,
) -> None:
    """Validate a space file; with --sample, report the share of infeasible candidates and why."""
    from cnnsearch.space import load_space

    if sample < 0:
        raise UserError(f"--sample must be 0 or more, but got {sample}")
    _check_classes(classes)
    shape = _input_shape(input_shape)
    loaded = load_space(file)
    searched = sum(dim.searched for table in loaded.dimensions.values() for dim in table.values())
    out.print(Text(f"{file}: valid ({searched} searched key{'s' if searched != 1 else ''})"), highlight=False)
    if sample:
        from cnnsearch.candidates import feasibility

        report = feasibility(loaded, shape, classes, n=sample)
        out.print(Text(report.summary()), highlight=False)


def _check_classes(classes: int) -> None:
    if classes < 2:
        raise UserError(f"--classes must be at least 2, but got {classes}")


def _input_shape(text: str) -> tuple[int, int, int]:
    from cnnsearch.spec import parse_input_shape

    try:
        return parse_input_shape(text)
    except ValueError as error:
        raise UserError(f"--input: {error}") from None


@space_app.command("show")
def space_show(file: Annotated[Path, typer.Argument(help="Space file, or a shipped space by name: default, tiny, cifar.")]) -> None:
    """Print a space's dimensions as a table."""
    from rich.table import Table

    from cnnsearch.space import load_space

    loaded = load_space(file)
    table = Table(title=str(file))
    for column in ("parameter", "kind", "values", "meaning"):
        table.add_column(column)
    for row in loaded.rows():
        table.add_row(*(Text(str(cell)) for cell in row))
    out.print(table)


@space_app.command("sample")
def space_sample(
    file: Annotated[Path, typer.Argument(help="Space file, or a shipped space by name: default, tiny, cifar.")],
    n: Annotated[int, typer.Option("--n", help="How many candidates.")] = 5,
    input_shape: Annotated[str, typer.Option("--input", help="Input shape CxHxW.")] = "1x28x28",
    classes: Annotated[int, typer.Option("--classes", help="Number of classes.")] = 10,
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed.")] = 0,
) -> None:
    """Print sampled candidates with their compact form, parameters and FLOPs (or why infeasible)."""
    from cnnsearch.space import load_space
    from cnnsearch.candidates import sample_candidates

    if n < 1:
        raise UserError(f"--n must be at least 1, but got {n}")
    _check_classes(classes)
    loaded = load_space(file)
    shape = _input_shape(input_shape)
    out.print(sample_candidates(loaded, shape, classes, n=n, seed=seed))


def _show_data_warnings_plainly() -> None:
    """cnnsearch's own warnings (skipped files…) as one line on stderr, without a source line."""
    import warnings

    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        if category.__name__ == "DataWarning":
            err.print(Text(f"warning: {message}", style="yellow"), highlight=False)
        else:
            original(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def main() -> None:
    """Entry point: UserError -> one line on stderr, exit 2."""
    # Idle OpenMP threads sleep instead of spinning: with spinning, a CPU search slows down
    # many times over as soon as anything else runs on the machine (measured in bench/).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    _show_data_warnings_plainly()
    try:
        app()
    except UserError as error:
        err.print(Text(f"error: {error}", style="red"), highlight=False)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
