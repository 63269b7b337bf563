"""The command that runs a search: `search` (start, resume or fork a run); `worker` (join one) is in cli.worker."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from cnnsearch.cli.app import (
    CheckpointEvery,
    DeviceOption,
    RunsDir,
    app,
    err,
    info,
    out,
    runs_flag,
)
from cnnsearch.cli.help import EXPORT_HELP, SAMPLER_HELP
from cnnsearch.errors import DiskFull, UserError, is_disk_full
from cnnsearch.run.folder import RunDir
from cnnsearch.search.strategies import PRUNERS, SAMPLERS

# The choices come from the library's tables: a sampler added there is offered here.
Sampler = Enum("Sampler", {name: name for name in SAMPLERS}, type=str)  # type: ignore[misc]
Pruner = Enum("Pruner", {name: name for name in PRUNERS}, type=str)  # type: ignore[misc]


@app.command()
def search(
    space: Annotated[
        str | None,
        typer.Option(
            "--space",
            help="Search-space TOML file, or a shipped space by name: default, tiny, cifar, sequence (a new run without --name: default).",
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="digits, fashion-mnist, mnist, cifar10, cifar100 or folder:PATH (default for a new run: digits).",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="Run name; an existing run is resumed (then --space and --data are not needed). Default for a new run: SPACE-DATE.",
        ),
    ] = None,
    trials: Annotated[
        int | None,
        typer.Option("--trials", help="Total trials in the run (resume adds the missing ones). Default 20."),
    ] = None,
    timeout: Annotated[
        str | None,
        typer.Option(
            "--timeout", help="Budget for this search, e.g. 90s, 20m, 2h; the running trial is stopped at the deadline."
        ),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", help="Epochs per trial (overrides the space's train.epochs).")
    ] = None,
    trial_timeout: Annotated[
        str | None, typer.Option("--trial-timeout", help="Longest a single trial may train, e.g. 60s.")
    ] = None,
    sampler: Annotated[
        Sampler | None,
        typer.Option(
            "--sampler",
            help=SAMPLER_HELP,
        ),
    ] = None,
    pruner: Annotated[
        Pruner | None,
        typer.Option(
            "--pruner",
            help="Stops weak candidates early (multi-fidelity): asha (successive halving, one bracket), hyperband, median or none. [default: asha]",
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option("--seed", help="Seed of the split, the sampler and every trial's training. [default: 0]"),
    ] = None,
    device: DeviceOption = "auto",
    runs_dir: RunsDir = Path("runs"),
    data_dir: Annotated[
        str | None,
        typer.Option(
            "--data-dir", help="Where dataset files are (searched before ~/.cache/cnnsearch and /usr/share/datasets)."
        ),
    ] = None,
    image_size: Annotated[int | None, typer.Option("--image-size", help="Resize images to this square size.")] = None,
    subset: Annotated[
        int | None, typer.Option("--subset", help="Search on a stratified subset of N training images.")
    ] = None,
    workers_text: Annotated[
        str,
        typer.Option(
            "--workers",
            help="Worker processes sharing the search, or auto: one per GPU, 1 on a CPU (10 minutes on 2 cores, "
            "3 seeds: 2 workers' final models tested 91.13%, 1 worker's 91.29%). GPUs are shared out; CPU cores split.",
        ),
    ] = "auto",
    storage: Annotated[
        str | None,
        typer.Option("--storage", help="postgresql:// or mysql:// URL for a study shared by several machines."),
    ] = None,
    objective: Annotated[
        str | None,
        typer.Option(
            "--objective",
            help="accuracy, or a Pareto search: accuracy,params / accuracy,flops / accuracy,latency. [default: accuracy]",
        ),
    ] = None,
    enqueue: Annotated[
        list[Path] | None, typer.Option("--enqueue", help="Architecture JSON to train first (repeatable).")
    ] = None,
    from_run: Annotated[
        str | None, typer.Option("--from-run", help="Train the best candidates of another run first.")
    ] = None,
    starters: Annotated[
        bool | None,
        typer.Option(
            "--starters/--no-starters",
            help="A new run trains the space's [[starter]] networks (known-good candidates) first, to the end; "
            "they count toward --trials. [default: on for every sampler but random, off with --fork/--from-run]",
        ),
    ] = None,
    fork: Annotated[
        str | None,
        typer.Option("--fork", help="Start a new run with this name, warm-started from the run named by --name."),
    ] = None,
    keep_weights: Annotated[
        int | None, typer.Option("--keep-weights", help="Keep the weights of this many best trials. [default: 3]")
    ] = None,
    download: Annotated[
        bool, typer.Option("--download", help="Download a missing dataset (fashion-mnist, mnist, cifar).")
    ] = False,
    checkpoint_every: CheckpointEvery = None,
    export_dir: Annotated[Path | None, typer.Option("--export", help=EXPORT_HELP)] = None,
) -> None:
    """Search a space for the best classifier of a dataset; resume a run by naming it."""
    from cnnsearch import search as searching
    from cnnsearch.cli.view import trials_phrase
    from cnnsearch.export.schedule import split_budget

    total_s = searching.parse_duration(timeout, option="--timeout")
    whole_deadline = time.monotonic() + total_s if total_s else None  # search and final model together
    search_timeout_s = split_budget(total_s)[0] if export_dir is not None and total_s else total_s
    if export_dir is not None:
        from cnnsearch.export.options import check_out_folder

        check_out_folder(export_dir, force=False, option="--export")  # refused now, not after the search
    settings = searching.SearchSettings(
        name=name or "",
        space=space,
        data=data,
        runs_dir=str(runs_dir),
        data_dir=data_dir,
        image_size=image_size,
        subset=subset,
        trials=trials,
        timeout_s=search_timeout_s,
        epochs=epochs,
        trial_timeout_s=searching.parse_duration(trial_timeout, option="--trial-timeout"),
        sampler=sampler.value if sampler else None,
        pruner=pruner.value if pruner else None,
        seed=seed,
        device=device,
        storage=storage,
        objective=searching.parse_objective(objective) if objective is not None else None,
        keep_weights=keep_weights,
        enqueue=tuple(str(path) for path in enqueue or ()),
        from_run=from_run,
        fork=fork,
        starters=starters,
        command=searching.command_line(),
    )
    checkpoint_every_s = searching.parse_checkpoint_every(checkpoint_every)
    opened_run: list[RunDir] = []  # the run, once open_search has named it
    with resume_hint(lambda: opened_run[0] if opened_run else RunDir(runs_dir, settings.name)):
        opened = searching.open_search(settings, workers=workers_text, download=download)
        run, run_info, workers = opened.run, opened.info, opened.workers
        opened_run.append(run)
        info(
            f"{'resuming' if opened.resumed else 'started'} run {run.name!r}: {run_info.data}, "
            f"{run_info.split_sizes.get('train')} train / {run_info.split_sizes.get('val')} val images, "
            f"{trials_phrase(opened.target, settings.timeout_s)}, "
            f"device {run_info.device if workers == 1 else 'shared by ' + str(workers) + ' workers'}"
        )
        for note in opened.notes:
            info(note)
        if opened.resumed and settings.trials is None:  # a resume with nothing left to train says so
            from cnnsearch.search.progress import counted_trials

            done = len(counted_trials(run.load_study(run_info)))
            if done >= opened.target:
                info(
                    f"run {run.name!r} already has its {opened.target} trials; pass --trials N (over {done}) to search on"
                )
        # With --export the whole job fits --timeout: the search's share counts from the start too,
        # so that setting up (loading, decoding the images) does not come out of the final model's.
        search_deadline = whole_deadline - total_s + search_timeout_s if whole_deadline and search_timeout_s else None
        interrupted = _run_search(
            opened,
            timeout_s=settings.timeout_s,
            device=device,
            workers=workers,
            checkpoint_every_s=checkpoint_every_s,
            deadline=search_deadline if export_dir is not None else None,
        )
    _finish_search(run, interrupted, exporting=export_dir is not None)
    if export_dir is not None:
        from cnnsearch.cli.models import export_best

        export_best(run, export_dir, whole_deadline, device)


@contextmanager
def resume_hint(current_run: Callable[[], RunDir]) -> Iterator[None]:
    """A full disk's message ends with the command that resumes the run, once the run exists."""
    try:
        try:
            yield
        except OSError as error:
            if is_disk_full(error):  # a write no layer below named
                raise DiskFull(error.filename or Path.cwd()) from None
            raise
    except DiskFull as full:
        run = current_run()
        if run.exists():
            full.then = f"resume with `cnnsearch search --name {run.name}{runs_flag(run)}`"
        raise


STOPPING = "stopping after saving the running trial's state (Ctrl-C again to force)…"


def install_sigint(notify: Callable[[str], None] | None) -> threading.Event:
    """First Ctrl-C asks for a clean stop (the trial is checkpointed); a second one forces it.

    `notify` tells the user (the live view shows it inside itself); None: say nothing."""
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        if notify is not None:
            notify(STOPPING)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def _run_search(
    opened,
    *,
    timeout_s: float | None,
    device: str,
    workers: int,  # noqa: ANN001
    checkpoint_every_s: float,
    deadline: float | None = None,
) -> bool:
    """Train until the target, the deadline (by default `timeout_s` from now) or Ctrl-C; True when
    the user interrupted."""
    from cnnsearch.cli.view import (
        ProgressState,
        SearchView,
        event_from_trial,
        start_from_study,
        state_from_study,
    )
    from cnnsearch.search.parallel import run_workers, spawn_workers
    from cnnsearch.search.worker import WorkerLoop

    run = opened.run
    if deadline is None and timeout_s:
        deadline = time.monotonic() + timeout_s
    state = ProgressState(name=run.name, target=opened.target, deadline=deadline)
    reported = start_from_study(run.load_study(opened.info), state)
    view = SearchView(state, console=out, messages=err, live=out.is_terminal)
    stop = install_sigint(view.notify)
    if workers == 1:
        with view:
            loop = WorkerLoop(
                run,
                opened.info,
                opened.space,
                target=opened.target,
                deadline=deadline,
                device=device,
                on_event=view,
                should_stop=stop.is_set,
                checkpoint_every_s=checkpoint_every_s,
            )
            loop.run_loop()
        return stop.is_set() or loop.interrupted
    with view:

        def on_poll(study) -> None:  # noqa: ANN001
            if view.live is not None:
                state_from_study(study, state)
                view.refresh()
                return
            finished = [
                t for t in study.get_trials(deepcopy=False) if t.state.is_finished() and t.number not in reported
            ]
            for trial in sorted(finished, key=lambda t: t.datetime_complete or t.datetime_start):  # in finishing order
                reported.add(trial.number)
                view(event_from_trial(trial))

        processes = spawn_workers(
            run,
            workers=workers,
            timeout_s=timeout_s,
            device=device,
            checkpoint_every_s=checkpoint_every_s,
            until=None if deadline is None else time.time() + (deadline - time.monotonic()),
        )
        failed = run_workers(run, processes, on_poll=on_poll)
    if failed:
        from cnnsearch.search.progress import counted_trials

        study = run.load_study(opened.info)
        lines = [worker.describe(study) for worker in failed]
        killed_only = all(worker.returncode < 0 for worker in failed)
        if killed_only and len(counted_trials(study)) >= opened.target:
            for line in lines:  # the others finished its work: the search reached its total
                info(line)
            return stop.is_set()
        raise UserError(
            f"{'; '.join(lines)}; resume with `cnnsearch search --name {run.name}{runs_flag(run)}`"
            + ("" if killed_only else " (the worker's own message is above)")
        )
    return stop.is_set()


def _finish_search(run, interrupted: bool, *, exporting: bool = False) -> None:
    from cnnsearch.results import leaderboard_rows, leaderboard_table, sort_and_cut
    from cnnsearch.search import summarize

    summary = summarize(run, interrupted=interrupted)
    frame = sort_and_cut(leaderboard_rows(run), sort=None, top=5)
    out.print(leaderboard_table(frame, title=f"{run.name}: top 5", width=out.width))
    counts = ", ".join(f"{count} {outcome}" for outcome, count in sorted(summary.counts.items()))
    info(f"trials: {counts or 'none'}")
    flag = runs_flag(run)
    if not exporting:
        info(
            f"more: cnnsearch leaderboard {run.name}{flag}   |   cnnsearch report {run.name}{flag}   |   cnnsearch export {run.name}{flag} --out model/"
        )
    if interrupted:
        info(f"interrupted: the study is intact; resume with `cnnsearch search --name {run.name}{flag}`")
        raise typer.Exit(130)
