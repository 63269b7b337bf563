"""Workers per device: how many concurrent `cnnsearch` workers give the most trials per hour.

For each N in --workers, the real command `cnnsearch search --workers N --timeout T` runs a
fresh search on one device (the product path: spawn_workers, CPU cores split between the
workers, GPUs shared out), then the run's study is read back: trials and training epochs
finished within the budget, per hour. Sampling is random and pruning off, with a fixed number
of epochs per trial, so every N draws candidates from the same distribution and a trial means
the same work; only the concurrency differs. The N alternate over --rounds (1 2 4, then 4 2 1).

This is the measurement behind `--workers` on one GPU (issue 5: "choose the default from
measurement"). On a CPU it shows whether processes beat intra-op threads on this machine.

    .venv/bin/python bench/workers.py                                  # CPU: N = 1, 2; 60 s each
    .venv/bin/python bench/workers.py --device cuda --workers 1,2,3,4,6,8 --budget 120 --data fashion-mnist
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

_common.setup_paths()

NAME = "workers"
SPACE = _common.REPO / "search_spaces" / "default.toml"


def run_search(workers: int, args: argparse.Namespace, runs_dir: str, index: int) -> dict:
    """One timed search with N workers; what it finished, read back from its study."""
    import optuna

    from cnnsearch.run.folder import RunDir

    name = f"w{workers}-r{index}"
    command = [
        sys.executable,
        "-m",
        "cnnsearch",
        "search",
        "--space",
        str(SPACE),
        "--data",
        args.data,
        "--name",
        name,
        "--runs-dir",
        runs_dir,
        "--workers",
        str(workers),
        "--device",
        args.device,
        "--timeout",
        f"{args.budget}s",
        "--trials",
        "100000",
        "--sampler",
        "random",
        "--pruner",
        "none",
        "--epochs",
        str(args.epochs),
        "--seed",
        str(index),
    ]
    if args.subset:
        command += ["--subset", str(args.subset)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    started = time.perf_counter()
    process = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if process.returncode not in (0, 130):
        raise SystemExit(f"N={workers}: cnnsearch search failed ({process.returncode}):\n{process.stderr[-2000:]}")
    run = RunDir(runs_dir, name)
    info = run.read_info()
    trials = run.load_study(info).get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    trained = [t for t in finished if t.user_attrs.get("epochs_run")]
    epochs = sum(int(t.user_attrs.get("epochs_run") or 0) for t in trained)
    first = min((t.datetime_start for t in trials if t.datetime_start), default=None)
    last = max((t.datetime_complete for t in finished if t.datetime_complete), default=None)
    # The search's own window (first trial start to last finish), not the process's start-up.
    window = (last - first).total_seconds() if first and last else float("nan")
    _common.echo(
        f"N={workers} round {index}: {len(trained)} trained trials, {epochs} epochs in {window:.0f} s "
        f"(process {wall:.0f} s)"
    )
    return {
        "workers": workers,
        "round": index,
        "trained_trials": len(trained),
        "epochs": epochs,
        "window_s": round(window, 2),
        "process_s": round(wall, 2),
        "trials_per_hour": 3600 * len(trained) / window if window > 0 else float("nan"),
        "epochs_per_hour": 3600 * epochs / window if window > 0 else float("nan"),
        "outcomes": json.dumps(
            {
                o: sum(1 for t in trials if t.user_attrs.get("outcome") == o)
                for o in sorted({t.user_attrs.get("outcome") or "" for t in trials})
            }
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="comma list of worker counts to compare")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (one device for all workers)")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--subset", type=int, default=None, help="training-pool images (e.g. 5000 for fashion-mnist)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per trial (fixed: no pruning)")
    parser.add_argument("--budget", type=float, default=60.0, help="seconds per search")
    parser.add_argument("--rounds", type=int, default=1, help="repeat, alternating the order of N")
    parser.add_argument("--quick", action="store_true", help="30 s per search")
    args = parser.parse_args()
    if args.quick:
        args.budget = min(args.budget, 30.0)
    counts = [int(n) for n in args.workers.split(",") if n.strip()]
    if not counts or min(counts) < 1:
        parser.error("--workers takes a comma list of positive counts, e.g. 1,2,4")

    rows = []
    with tempfile.TemporaryDirectory(prefix="cnnsearch-workers-") as runs_dir:
        for index in range(args.rounds):
            for workers in counts if index % 2 == 0 else counts[::-1]:
                rows.append(run_search(workers, args, runs_dir, index))
    by_n = {n: [r for r in rows if r["workers"] == n] for n in counts}
    summary = {
        n: (_common.median([r["trials_per_hour"] for r in rs]), _common.median([r["epochs_per_hour"] for r in rs]))
        for n, rs in by_n.items()
    }
    base = summary[counts[0]][1]
    best = max(counts, key=lambda n: summary[n][1])
    _common.append_rows(
        NAME,
        [
            {
                **row,
                "device": args.device,
                "data": args.data,
                "epochs_per_trial": args.epochs,
                "budget_s": args.budget,
                "cpu_count": os.cpu_count(),
            }
            for row in rows
        ],
    )
    device = _common.gpu_name() if args.device.startswith("cuda") else f"cpu ({os.cpu_count()} cores)"
    table = [[n, summary[n][0], summary[n][1], summary[n][1] / base if base else float("nan")] for n in counts]
    body = (
        f"`cnnsearch search --workers N` on {device}, {args.data}"
        f"{f' (subset {args.subset})' if args.subset else ''}, default space, random sampling, no pruning, "
        f"{args.epochs} epochs per trial, {args.budget:g} s per search, {args.rounds} round(s) (medians); "
        f"CPU workers get cores / N torch threads each.\n\n"
        + _common.markdown_table(["workers", "trained trials / h", "epochs / h", f"epochs / h vs N={counts[0]}"], table)
        + f"\n\nMost epochs per hour: N = {best}."
    )
    _common.append_section(f"workers: concurrent workers on one device ({args.device})", body)
    print(body)


if __name__ == "__main__":
    main()
