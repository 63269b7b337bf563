"""Scale: time and peak memory of leaderboard_frame and write_report for 100 / 1,000 / 10,000 trials.

Synthetic runs (tests/synthetic.py, trials written through Optuna's API) of each size sit in a
temp runs folder. Every (size, function) is measured in a fresh subprocess, so imports and
caches of one measurement never help another:

  time       wall seconds of the call, study loading included (the functions open the run
             themselves, as the CLI does)
  +RSS       the process's peak RSS during the call (VmHWM, reset just before it) minus its RSS
             just before it: what the call added at its peak
  tracemalloc peak   Python-level allocations during the call, in a second subprocess
             (tracemalloc slows the code down, so it is never timed)

The growth factor per 10x more trials must be about 10 or less (linear or better); it is
reported with its exponent log10(factor) (1.0 = linear, 2.0 = quadratic).

    .venv/bin/python bench/scale.py                          # 100, 1,000, 10,000 trials
    .venv/bin/python bench/scale.py --sizes 100,1000 --quick
    .venv/bin/python bench/scale.py --multi-objective        # Pareto ranks: O(n^2) by design
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

_common.setup_paths()

NAME = "scale"
FUNCTIONS = ("leaderboard_frame", "write_report")
LINEAR_TOLERANCE = 1.2  # a factor up to 12 per 10x still counts as linear (noise on a shared machine)


def child(function: str, runs_dir: str, name: str, mode: str) -> None:
    """Measure one call in this (fresh) process; print one JSON line."""

    import matplotlib  # write_report imports it lazily; loaded here so the baseline holds it too

    from cnnsearch import report
    from cnnsearch.run.folder import RunDir

    matplotlib.use("Agg")
    run = RunDir(runs_dir, name)
    base_rss = _reset_peak_rss()
    out: dict[str, float] = {"base_rss_mb": base_rss / 1024}
    call = {
        "leaderboard_frame": lambda: report.leaderboard_frame(run),
        "write_report": lambda: report.write_report(run),
    }[function]
    if mode == "time":
        started = time.perf_counter()
        call()
        out["seconds"] = time.perf_counter() - started
        peak = _peak_rss()
        out["peak_rss_mb"] = peak / 1024
        out["added_rss_mb"] = (peak - base_rss) / 1024
    else:
        import tracemalloc

        tracemalloc.start()
        call()
        out["tracemalloc_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    print(json.dumps(out))


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> int:
    """The current RSS in KiB, after resetting the kernel's peak (VmHWM) to it where Linux allows."""
    import resource

    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak RSS (Linux >= 4.0)
    current = _status_kib("VmRSS")
    return current if current is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _peak_rss() -> int:
    """Peak RSS in KiB since the last reset (VmHWM), else since the process started (ru_maxrss)."""
    import resource

    peak = _status_kib("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(function: str, runs_dir: str, name: str, mode: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", function, runs_dir, name, mode], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"{function} on {name} ({mode}) failed: {done.stderr.strip()[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:6])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000", help="comma list of trial counts")
    parser.add_argument("--repeats", type=int, default=3, help="timed subprocesses per (size, function); median")
    parser.add_argument("--multi-objective", action="store_true", help="accuracy,params runs (Pareto ranks)")
    parser.add_argument("--quick", action="store_true", help="1 timed run per measurement")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 1
    sizes = sorted(int(size) for size in args.sizes.split(","))

    import optuna
    from synthetic import make_synthetic_run

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" lines

    results: dict[tuple[str, int], dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="cnnsearch-scale-") as runs_dir:
        for size in sizes:
            name = f"synthetic{size}"
            started = time.perf_counter()
            make_synthetic_run(Path(runs_dir), name, size, multi_objective=args.multi_objective)
            journal = Path(runs_dir, name, "study.journal").stat().st_size / 2**20
            _common.echo(f"{size} trials written in {time.perf_counter() - started:.1f} s (journal {journal:.1f} MiB)")
            for function in FUNCTIONS:
                # The sizes' runs alternate with nothing else here; the repeats alternate the functions.
                timed = [measure(function, runs_dir, name, "time") for _ in range(args.repeats)]
                memory = measure(function, runs_dir, name, "tracemalloc")
                results[(function, size)] = {
                    "seconds": _common.median([t["seconds"] for t in timed]),
                    "added_rss_mb": _common.median([t["added_rss_mb"] for t in timed]),
                    "peak_rss_mb": _common.median([t["peak_rss_mb"] for t in timed]),
                    "tracemalloc_peak_mb": memory["tracemalloc_peak_mb"],
                    "journal_mb": journal,
                }
                r = results[(function, size)]
                _common.echo(
                    f"  {function:17s} {r['seconds']:7.3f} s, +{r['added_rss_mb']:.0f} MiB RSS, "
                    f"tracemalloc peak {r['tracemalloc_peak_mb']:.1f} MiB"
                )

    rows, table, verdicts = [], [], []
    for function in FUNCTIONS:
        for index, size in enumerate(sizes):
            r = results[(function, size)]
            growth = {}
            if index:
                previous = results[(function, sizes[index - 1])]
                per_10x = math.log(10) / math.log(size / sizes[index - 1])  # normalise to a 10x step
                for key in ("seconds", "added_rss_mb", "tracemalloc_peak_mb"):
                    ratio = r[key] / previous[key] if previous[key] > 0 else float("nan")
                    growth[key] = ratio**per_10x if ratio == ratio and ratio > 0 else float("nan")
            rows.append(
                {
                    "function": function,
                    "trials": size,
                    "multi_objective": args.multi_objective,
                    "repeats": args.repeats,
                    **r,
                    **{f"growth_{k}": v for k, v in growth.items()},
                }
            )
            table.append(
                [
                    function,
                    f"{size:,}",
                    r["seconds"],
                    r["added_rss_mb"],
                    r["tracemalloc_peak_mb"],
                    _growth(growth.get("seconds")),
                    _growth(growth.get("added_rss_mb")),
                    _growth(growth.get("tracemalloc_peak_mb")),
                ]
            )
        last = [row for row in rows if row["function"] == function][1:]
        worst_time = max((row["growth_seconds"] for row in last), default=float("nan"))
        worst_memory = max((row["growth_tracemalloc_peak_mb"] for row in last), default=float("nan"))
        met = worst_time <= 10 * LINEAR_TOLERANCE and worst_memory <= 10 * LINEAR_TOLERANCE
        verdicts.append(
            f"- {function}: worst growth per 10x: time x{worst_time:.1f}, Python memory "
            f"x{worst_memory:.1f}; linear or better (<= x{10 * LINEAR_TOLERANCE:g}): {_common.verdict(met)}"
        )
    _common.append_rows(NAME, rows)
    body = (
        f"Synthetic {'multi-objective (accuracy,params) ' if args.multi_objective else ''}runs; each figure from fresh "
        f"subprocesses (time: median of {args.repeats}; +RSS: peak RSS during the call minus RSS before it; "
        f"tracemalloc: Python allocations, separate run). Growth = the factor per 10x more trials "
        f"(exponent in brackets: 1.0 linear, 2.0 quadratic).\n\n"
        + _common.markdown_table(
            [
                "function",
                "trials",
                "s",
                "+RSS MiB",
                "tracemalloc MiB",
                "time growth",
                "RSS growth",
                "tracemalloc growth",
            ],
            table,
        )
        + "\n\n"
        + "\n".join(verdicts)
    )
    if args.multi_objective:
        table, same = compare_pareto(sizes)
        body += (
            "\n\nPareto ranks, the O(n^2)-memory core of multi-objective leaderboards: report.pareto_ranks "
            "(pairwise, O(n^2)) against the two-objective sweep it now uses (O(n log n)) on "
            f"random (accuracy, params) points; ranks identical (and on 200 small cases with ties and NaN): "
            f"{'yes' if same else '**NO**'}\n\n"
            + _common.markdown_table(["function", "points", "s", "tracemalloc MiB"], table)
        )
    _common.append_section(f"scale: leaderboard_frame and write_report vs trials ({', '.join(map(str, sizes))})", body)
    print(body)


def pareto_ranks_2d(points, maximize):
    """The two-objective sweep, adopted in report.pareto_ranks (O(n log n) time, O(n) memory)."""
    from cnnsearch.results.leaderboard import pareto_ranks

    return pareto_ranks(points, maximize)


def pareto_ranks_pairwise(points, maximize):
    """report.pareto_ranks' general O(n^2) path, forced by a third, constant objective."""
    import numpy as np

    from cnnsearch.results.leaderboard import pareto_ranks

    points = np.asarray(points, dtype=float).reshape(len(points), -1)
    return pareto_ranks(np.column_stack([points, np.zeros(len(points))]), [*maximize, False])


def compare_pareto(sizes: list[int], *, seed: int = 0) -> tuple[list[list[object]], bool]:
    """The pairwise sorting against the two-objective sweep on the same (accuracy, params) points."""
    import tracemalloc

    import numpy as np

    pareto_ranks = pareto_ranks_pairwise

    rng = np.random.default_rng(seed)
    for _ in range(200):  # small cases with ties and missing values first
        n = int(rng.integers(1, 60))
        points = rng.integers(0, 6, size=(n, 2)).astype(float)
        points[rng.random((n, 2)) < 0.1] = np.nan
        maximize = [bool(rng.integers(0, 2)), bool(rng.integers(0, 2))]
        if not (pareto_ranks(points, maximize) == pareto_ranks_2d(points, maximize)).all():
            return [], False
    table, same = [], True
    for size in sizes:
        points = np.column_stack([np.round(rng.random(size), 3), rng.integers(1_000, 2_000_000, size)]).astype(float)
        found = {}
        for function in (pareto_ranks, pareto_ranks_2d):
            tracemalloc.start()
            started = time.perf_counter()
            found[function.__name__] = function(points, [True, False])
            seconds = time.perf_counter() - started
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            table.append([function.__name__, f"{size:,}", seconds, peak])
        same &= bool((found["pareto_ranks_pairwise"] == found["pareto_ranks_2d"]).all())
    return table, same


def _growth(value: float | None) -> str:
    if value is None:
        return ""
    if value != value:
        return "–"
    return f"x{value:.1f} ({math.log10(value):.2f})" if value > 0 else f"x{value:.1f}"


if __name__ == "__main__":
    main()
