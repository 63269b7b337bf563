"""The command that joins a search: `worker` (one more process, on this machine or another)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from cnnsearch.cli.app import CheckpointEvery, DeviceOption, RunsDir, app, info, out
from cnnsearch.cli.search import install_sigint, resume_hint


@app.command()
def worker(
    name: Annotated[str, typer.Option("--name", help="The run to join.")],
    storage: Annotated[
        str | None,
        typer.Option("--storage", help="The run's database URL (joins a search started on another machine)."),
    ] = None,
    runs_dir: RunsDir = Path("runs"),
    device: DeviceOption = "auto",
    timeout: Annotated[str | None, typer.Option("--timeout", help="Stop this worker after this long, e.g. 2h.")] = None,
    worker_index: Annotated[
        int | None,
        typer.Option(
            "--worker-index",
            help="Distinct per worker: varies the sampler's seed [default: drawn from this machine's name and "
            "the process id, so that workers joined at the same time do not propose the same candidates].",
        ),
    ] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="Torch CPU threads for this worker.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="Print nothing but errors.")] = False,
    checkpoint_every: CheckpointEvery = None,
    until: Annotated[
        float | None,
        typer.Option(
            "--until",
            hidden=True,
            help="Stop at this Unix time (search --workers N passes its own deadline, so that the workers' "
            "start-up does not move it); --timeout stays the whole budget the cost model shares out.",
        ),
    ] = None,
    parent: Annotated[
        int | None, typer.Option("--parent", hidden=True, help="The search process that started this worker.")
    ] = None,
) -> None:
    """Join a search as one more worker process (on this machine or another)."""
    from cnnsearch import search as searching
    from cnnsearch.cli.view import ProgressState, SearchView

    if parent is not None and not searching.stop_with_parent(parent):
        return  # the search that started it is gone already

    if threads:
        import torch

        torch.set_num_threads(threads)
    run, run_info, space_obj = searching.join_run(runs_dir, name, storage)
    timeout_s = searching.parse_duration(timeout, option="--timeout")
    checkpoint_every_s = searching.parse_checkpoint_every(checkpoint_every)
    stop = install_sigint(None if quiet else info)
    deadline = time.monotonic() + timeout_s if timeout_s else None
    if until is not None:
        deadline = time.monotonic() + (until - time.time())
    target = searching.resolve_target(run, run_info, None, timed=deadline is not None, owner=False)
    state = ProgressState(name=run.name, target=target, deadline=deadline)
    view = SearchView(state, console=out, live=False) if not quiet else None
    loop = searching.WorkerLoop(
        run,
        run_info,
        space_obj,
        target=target,
        deadline=deadline,
        budget_s=timeout_s,
        device=device,
        worker_index=worker_index if worker_index is not None else searching.joined_index(),
        on_event=view,
        should_stop=stop.is_set,
        checkpoint_every_s=checkpoint_every_s,
    )
    with resume_hint(lambda: run):
        loop.run_loop()
    if stop.is_set() or loop.interrupted:
        raise typer.Exit(130)
    if not quiet:
        info(f"run {run.name!r} has its {target} trials; this worker is done")
