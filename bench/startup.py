"""Start-up: whole-process wall time of `cnnsearch --help` and `cnnsearch leaderboard` on 1,000 trials.

A synthetic 1,000-trial run (tests/synthetic.py, written through Optuna's API) sits in a temp
runs folder. Each round runs, in turn, a bare `python -c pass` (the interpreter's own start,
for scale), `cnnsearch --help` and `cnnsearch leaderboard NAME`; the medians over the rounds
are compared with the targets (--help < 0.5 s, leaderboard of 1,000 trials < 1 s). A wrapper
process then runs the leaderboard command in-process and lists which heavy modules it imported
(the report must not import torch), and `-X importtime` names the slowest imports.

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
import _common  # noqa: E402

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
from cnnsearch.report import leaderboard_frame, leaderboard_table, sort_and_cut
from cnnsearch.rundir import RunDir
t1 = time.perf_counter()
run = RunDir(sys.argv[2], sys.argv[1])
info = run.read_info()
study = run.load_study(info)
study.get_trials(deepcopy=False)
t2 = time.perf_counter()
frame = sort_and_cut(leaderboard_frame(run, study=study), sort=None, top=None)
t3 = time.perf_counter()
console = Console(file=io.StringIO(), width=160, soft_wrap=True)
console.print(leaderboard_table(frame, title="x", width=160))
t4 = time.perf_counter()
console = Console(file=io.StringIO(), width=160, soft_wrap=True)
console.print(leaderboard_table(sort_and_cut(frame, top=20), title="x", width=160))
t5 = time.perf_counter()
print(f"{t1 - t0} {t2 - t1} {t3 - t2} {t4 - t3} {t5 - t4} {len(frame)}")
"""
STEPS = ("import cnnsearch.report (pandas, rich)", "open the journal + replay the study",
         "leaderboard_frame", "render the table (all rows)", "render the table (--top 20)")


def breakdown(name: str, runs_dir: str, env: dict[str, str], repeats: int) -> tuple[dict[str, float], int]:
    """Median seconds of each step of the leaderboard command, measured inside one process."""
    samples: list[list[float]] = []
    rows = 0
    for _ in range(repeats):
        done = subprocess.run([sys.executable, "-c", BREAKDOWN, name, runs_dir], capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"the breakdown failed: {done.stderr.strip()[-500:]}")
        *values, rows = done.stdout.split()
        samples.append([float(value) for value in values])
    return {step: _common.median([sample[i] for sample in samples]) for i, step in enumerate(STEPS)}, int(rows)


def cnnsearch_command() -> list[str]:
    script = Path(sys.executable).parent / "cnnsearch"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "cnnsearch"]


def wall(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return seconds


def imported_modules(args: list[str], env: dict[str, str]) -> list[str]:
    done = subprocess.run([sys.executable, "-c", WRAPPER.format(heavy=HEAVY), *args], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, env=env, text=True)
    for line in done.stderr.splitlines():
        if line.startswith("MODULES "):
            return [name for name in line[len("MODULES "):].split(",") if name]
    raise RuntimeError(f"the import check failed: {done.stderr.strip()[-500:]}")


def slowest_imports(args: list[str], env: dict[str, str], count: int = 8) -> list[tuple[str, float]]:
    """Top-level packages by cumulative import time (-X importtime), in seconds."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", WRAPPER.format(heavy=HEAVY), *args],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    totals: dict[str, float] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = (part.strip() for part in line[len("import time:"):].split("|"))
        if not cumulative.isdigit() or name.startswith(" "):
            continue
        top = name.strip().split(".")[0]
        if name == name.lstrip():  # a top-level import line: its cumulative time covers its children
            totals[top] = totals.get(top, 0.0) + int(cumulative) / 1e6
    return sorted(totals.items(), key=lambda item: -item[1])[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000, help="trials in the synthetic run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="the defaults (kept for run_all.py)")
    args = parser.parse_args()

    from synthetic import make_synthetic_run
    import optuna

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
        modules = {"help": imported_modules(["--help"], env),
                   "leaderboard": imported_modules(["leaderboard", name, "--runs-dir", runs_dir], env)}
        imports = slowest_imports(["leaderboard", name, "--runs-dir", runs_dir], env)
        steps, shown_rows = breakdown(name, runs_dir, env, args.rounds)
        top20 = [*cli, "leaderboard", name, "--runs-dir", runs_dir, "--top", "20"]
        top20_s = _common.median([wall(top20, env) for _ in range(args.rounds)])

    medians = {key: _common.median(values) for key, values in times.items()}
    rows, table = [], []
    for key in commands:
        target = TARGETS.get(key)
        met = medians[key] < target if target else None
        rows.append({"what": key, "trials": args.trials if key == "leaderboard" else "", "rounds": args.rounds,
                     "median_s": medians[key], "min_s": min(times[key]), "max_s": max(times[key]),
                     "target_s": target or "", "met": "" if met is None else met,
                     "heavy_modules": " ".join(modules.get(key, []))})
        shown = {"help": "`cnnsearch --help`", "leaderboard": f"`cnnsearch leaderboard` ({args.trials:,} trials)"}
        table.append([shown.get(key, f"`{key}`"), medians[key], f"{min(times[key]):.3f} .. {max(times[key]):.3f}",
                      f"< {target:g} s" if target else "", "" if met is None else _common.verdict(met),
                      ", ".join(modules.get(key, [])) if key in modules else ""])
    torch_free = "torch" not in modules["leaderboard"] and "pytorch_lightning" not in modules["leaderboard"]
    body = (
        f"Whole-process wall time, median of {args.rounds} rounds (the three commands alternate), after one "
        f"warm-up run of each:\n\n"
        + _common.markdown_table(["command", "median s", "range s", "target", "verdict", "heavy modules imported"], table)
        + f"\n\n`cnnsearch leaderboard` imports torch: {'no' if torch_free else '**yes**'} "
          f"({'met' if torch_free else 'missed'}: the report must not import torch). "
          f"Slowest top-level imports of the leaderboard process (-X importtime, cumulative, inflated by the "
          f"tracing): " + ", ".join(f"{module} {seconds:.2f} s" for module, seconds in imports) + "."
        + f"\n\nWhere the leaderboard's time goes (one process, steps timed inside it, median of {args.rounds}; "
          f"the table has {shown_rows:,} ranked rows; interpreter start and typer come on top):\n\n"
        + _common.markdown_table(["step", "s"], [[step, seconds] for step, seconds in steps.items()])
        + f"\n\n`cnnsearch leaderboard NAME --top 20` as a whole process: {top20_s:.3f} s (median of {args.rounds})."
    )
    rows.append({"what": "leaderboard --top 20", "trials": args.trials, "rounds": args.rounds, "median_s": top20_s,
                 **{f"step {step}": seconds for step, seconds in steps.items()}})
    _common.append_rows(NAME, rows)
    _common.append_section(f"startup: --help and leaderboard of {args.trials:,} trials", body)
    print(body)


if __name__ == "__main__":
    main()
