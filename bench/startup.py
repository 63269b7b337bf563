"""Start-up: whole-process wall time of `cnnsearch --help` and `cnnsearch leaderboard` on 1,000 trials.

A synthetic 1,000-trial run (tests/synthetic.py, written through Optuna's API) sits in a temp
runs folder. Each round runs, in turn, a bare `python -c pass` (the interpreter's own start,
for scale), `cnnsearch --help` and `cnnsearch leaderboard NAME`; the medians over the rounds
are compared with the targets (--help < 0.5 s, leaderboard of 1,000 trials < 1 s). A wrapper
process then runs the leaderboard command in-process and lists which heavy modules it imported
(the report must not import torch; the table needs no pandas), and `-X importtime` names the
slowest imports. The breakdown times the steps of the table path the command takes
(`report.leaderboard_rows`, rich), and `--format csv` (the pandas path) is timed as well.

    .venv/bin/python bench/startup.py               # 1,000 trials, 5 rounds
    .venv/bin/python bench/startup.py --trials 5000 --rounds 9
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common

_common.setup_paths()

NAME = "startup"
TARGETS = {"help": 0.5, "leaderboard": 1.0}  # seconds
HEAVY = ("torch", "pytorch_lightning", "lightning", "matplotlib", "optuna", "pandas", "sklearn", "numpy")
WRAPPER = """
import sys
sys.argv = ["cnnsearch", *sys.argv[1:]]
from cnnsearch.cli import main
try:
    main()
except SystemExit:
    pass
sys.stderr.write("\\nMODULES " + ",".join(m for m in {heavy!r} if m in sys.modules) + "\\n")
"""


BREAKDOWN = """
import io, sys, time
t0 = time.perf_counter()
from rich.console import Console
from cnnsearch.results.leaderboard import leaderboard_rows, sort_and_cut
from cnnsearch.results.render import leaderboard_table
from cnnsearch.run.folder import RunDir
t1 = time.perf_counter()
import optuna
t2 = time.perf_counter()
run = RunDir(sys.argv[2], sys.argv[1])
info = run.read_info()
study = run.load_study(info)
study.get_trials(deepcopy=False)
t3 = time.perf_counter()
board = sort_and_cut(leaderboard_rows(run, study=study), sort=None, top=None)
t4 = time.perf_counter()
console = Console(file=io.StringIO(), width=160, soft_wrap=True)
console.print(leaderboard_table(board, title="x", width=160))
t5 = time.perf_counter()
console = Console(file=io.StringIO(), width=160, soft_wrap=True)
console.print(leaderboard_table(sort_and_cut(board, top=int(sys.argv[3])), title="x", width=160))
t6 = time.perf_counter()
print(f"{t1 - t0} {t2 - t1} {t3 - t2} {t4 - t3} {t5 - t4} {t6 - t5} {len(board)}")
"""
STEPS = (
    "import cnnsearch.report (rich; no pandas, no numpy)",
    "import optuna (numpy, tqdm)",
    "open the journal + replay the study",
    "leaderboard_rows",
    "render the table (all rows)",
    "render the table (the rows a terminal gets)",
)
# cnnsearch's own modules the leaderboard process imports: compiled at every start when
# PYTHONDONTWRITEBYTECODE is set (site-packages come with their .pyc files).
OWN_MODULES = ("__init__", "__main__", "cli", "errors", "report", "rundir", "spec", "journal")


def breakdown(name: str, runs_dir: str, env: dict[str, str], repeats: int, shown: int) -> tuple[dict[str, float], int]:
    """Median seconds of each step of the leaderboard command, measured inside one process."""
    samples: list[list[float]] = []
    rows = 0
    for _ in range(repeats):
        done = subprocess.run(
            [sys.executable, "-c", BREAKDOWN, name, runs_dir, str(shown)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"the breakdown failed: {done.stderr.strip()[-500:]}")
        *values, rows = done.stdout.split()
        samples.append([float(value) for value in values])
    return {step: _common.median([sample[i] for sample in samples]) for i, step in enumerate(STEPS)}, int(rows)


def compile_seconds() -> float:
    """Seconds to compile the cnnsearch modules the leaderboard imports (what no .pyc saves)."""
    package = _common.REPO / "cnnsearch"
    started = time.perf_counter()
    for module in OWN_MODULES:
        path = package / f"{module}.py"
        if path.is_file():
            compile(path.read_text(), str(path), "exec")
    return time.perf_counter() - started


def cnnsearch_command() -> list[str]:
    script = Path(sys.executable).parent / "cnnsearch"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "cnnsearch"]


def wall(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return seconds


def imported_modules(args: list[str], env: dict[str, str]) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", WRAPPER.format(heavy=HEAVY), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
        check=False,
    )
    for line in done.stderr.splitlines():
        if line.startswith("MODULES "):
            return [name for name in line[len("MODULES ") :].split(",") if name]
    raise RuntimeError(f"the import check failed: {done.stderr.strip()[-500:]}")


def slowest_imports(args: list[str], env: dict[str, str], count: int = 8) -> list[tuple[str, float]]:
    """Top-level packages by cumulative import time (-X importtime), in seconds."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", WRAPPER.format(heavy=HEAVY), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
        check=False,
    )
    totals: dict[str, float] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or line.count("|") != 2:
            continue
        _, cumulative, name = line[len("import time:") :].split("|")
        # A top-level import has one space before its name (nested ones two more per level); its
        # cumulative time covers its children, which are not counted again.
        if not cumulative.strip().isdigit() or not name.startswith(" ") or name.startswith("  "):
            continue
        top = name.strip().split(".")[0]
        totals[top] = totals.get(top, 0.0) + int(cumulative) / 1e6
    return sorted(totals.items(), key=lambda item: -item[1])[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000, help="trials in the synthetic run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="the defaults (kept for run_all.py)")
    args = parser.parse_args()

    import optuna
    from synthetic import make_synthetic_run

    from cnnsearch.cli.results import TABLE_ROWS

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" lines

    env = {**os.environ, "COLUMNS": "160"}
    with tempfile.TemporaryDirectory(prefix="cnnsearch-startup-") as runs_dir:
        name = f"synthetic{args.trials}"
        started = time.perf_counter()
        make_synthetic_run(Path(runs_dir), name, args.trials)
        _common.echo(f"wrote a {args.trials}-trial synthetic run in {time.perf_counter() - started:.1f} s")
        cli = cnnsearch_command()
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "help": [*cli, "--help"],
            "leaderboard": [*cli, "leaderboard", name, "--runs-dir", runs_dir],
        }
        for command in commands.values():  # warm the file cache; not counted
            wall(command, env)
        times: dict[str, list[float]] = {key: [] for key in commands}
        for round_index in range(args.rounds):
            for key, command in commands.items():
                times[key].append(wall(command, env))
            _common.echo(f"round {round_index + 1}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items()))
        modules = {
            "help": imported_modules(["--help"], env),
            "leaderboard": imported_modules(["leaderboard", name, "--runs-dir", runs_dir], env),
        }
        imports = slowest_imports(["leaderboard", name, "--runs-dir", runs_dir], env)
        steps, shown_rows = breakdown(name, runs_dir, env, args.rounds, TABLE_ROWS)
        top20 = [*cli, "leaderboard", name, "--runs-dir", runs_dir, "--top", "20"]
        top20_s = _common.median([wall(top20, env) for _ in range(args.rounds)])
        csv_command = [*cli, "leaderboard", name, "--runs-dir", runs_dir, "--format", "csv"]
        csv_s = _common.median([wall(csv_command, env) for _ in range(args.rounds)])
        csv_modules = imported_modules(["leaderboard", name, "--runs-dir", runs_dir, "--format", "csv"], env)
    compiling = compile_seconds() if os.environ.get("PYTHONDONTWRITEBYTECODE") else 0.0

    medians = {key: _common.median(values) for key, values in times.items()}
    rows, table = [], []
    for key in commands:
        target = TARGETS.get(key)
        met = medians[key] < target if target else None
        rows.append(
            {
                "what": key,
                "trials": args.trials if key == "leaderboard" else "",
                "rounds": args.rounds,
                "median_s": medians[key],
                "min_s": min(times[key]),
                "max_s": max(times[key]),
                "target_s": target or "",
                "met": "" if met is None else met,
                "heavy_modules": " ".join(modules.get(key, [])),
            }
        )
        shown = {"help": "`cnnsearch --help`", "leaderboard": f"`cnnsearch leaderboard` ({args.trials:,} trials)"}
        table.append(
            [
                shown.get(key, f"`{key}`"),
                medians[key],
                f"{min(times[key]):.3f} .. {max(times[key]):.3f}",
                f"< {target:g} s" if target else "",
                "" if met is None else _common.verdict(met),
                ", ".join(modules.get(key, [])) if key in modules else "",
            ]
        )
    torch_free = "torch" not in modules["leaderboard"] and "pytorch_lightning" not in modules["leaderboard"]
    body = (
        f"Whole-process wall time, median of {args.rounds} rounds (the three commands alternate), after one "
        f"warm-up run of each:\n\n"
        + _common.markdown_table(
            ["command", "median s", "range s", "target", "verdict", "heavy modules imported"], table
        )
        + f"\n\n`cnnsearch leaderboard` imports torch: {'no' if torch_free else '**yes**'} "
        f"({'met' if torch_free else 'missed'}: the report must not import torch). "
        f"Slowest top-level imports of the leaderboard process (-X importtime, cumulative, inflated by the "
        f"tracing): "
        + ", ".join(f"{module} {seconds:.2f} s" for module, seconds in imports)
        + "."
        + f"\n\nWhere the leaderboard's time goes (one process, steps timed inside it, median of {args.rounds}; "
        f"the table has {shown_rows:,} ranked rows, a terminal gets the best {TABLE_ROWS}; interpreter start, "
        f"typer and the pydantic adapters typer builds for the command's options come on top):\n\n"
        + _common.markdown_table(["step", "s"], [[step, seconds] for step, seconds in steps.items()])
        + f"\n\n`cnnsearch leaderboard NAME --top 20` as a whole process: {top20_s:.3f} s (median of {args.rounds}). "
        f"`--format csv` (all {shown_rows:,} rows through pandas): {csv_s:.3f} s, heavy modules: "
        f"{', '.join(csv_modules) or 'none'}."
        + (
            f"\n\nPYTHONDONTWRITEBYTECODE is set here, so every process compiles cnnsearch's own modules "
            f"({', '.join(OWN_MODULES)}): {compiling:.3f} s of each leaderboard run that a normal install, with "
            f".pyc files, does not spend."
            if compiling
            else ""
        )
    )
    rows.append(
        {
            "what": "leaderboard --top 20",
            "trials": args.trials,
            "rounds": args.rounds,
            "median_s": top20_s,
            **{f"step {step}": seconds for step, seconds in steps.items()},
        }
    )
    rows.append(
        {
            "what": "leaderboard --format csv",
            "trials": args.trials,
            "rounds": args.rounds,
            "median_s": csv_s,
            "heavy_modules": " ".join(csv_modules),
        }
    )
    _common.append_rows(NAME, rows)
    _common.append_section(f"startup: --help and leaderboard of {args.trials:,} trials", body)
    print(body)


if __name__ == "__main__":
    main()
