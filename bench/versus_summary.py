"""The head-to-head figures over seeds run in separate invocations, read back from versus.csv.

`bench/versus.py` summarises only the seeds of one invocation. A 3-seed comparison on a shared
2-core machine is often run as several invocations (a seed or a few contenders at a time); this
script takes the rows of bench/results/versus.csv that match the filters, keeps the newest row of
each (contender, seed), and prints the same per-contender summary (test accuracy mean ± sd over
seeds, parameters, trials, time in pruned or cut trials, time to the baseline's final best), the
paired per-seed lead over the peer, and the issue's verdicts. Nothing is trained or re-scored:
every figure is one versus.py wrote.

A ratio (time to the baseline's final best over the baseline's own) is recorded only against a
baseline of the same invocation. With `--race-runs DIR` (a `versus.py --work` folder; repeat)
the race is run again across invocations from the kept run folders: each cnnsearch contender's
best-so-far curve is read from its study, in seconds from its run's creation, and timed against
the baseline of the same seed, wherever that was run.

    .venv/bin/python bench/versus_summary.py --commit cbf8361 --commit 3d79f4f
    .venv/bin/python bench/versus_summary.py --baseline random --race-runs /work/bench-a --race-runs /work/bench-b
    .venv/bin/python bench/versus_summary.py --since 2026-12-01T14:00 --record   # also append to RESULTS.md
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import statistics
import sys
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common
from versus import LEAD_TARGET, TARGET_RATIO, summary_table, verdicts
from versus_run import Result, read_study

CSV = _common.RESULTS_DIR / "versus.csv"


def _float(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        raise SystemExit(f"{path} does not exist: run bench/versus.py first")
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def commit_of(row: dict[str, str]) -> str:
    found = re.search(r"commit=(\S+)", row.get("versions", ""))
    return found.group(1) if found else ""


def select(rows: list[dict[str, str]], args: argparse.Namespace) -> list[dict[str, str]]:
    """The newest matching row of each (contender, seed)."""
    kept: dict[tuple[str, str], dict[str, str]] = {}
    for row in rows:
        if args.commit and not any(commit_of(row).startswith(c) for c in args.commit):
            continue
        if args.since and row["timestamp"] < args.since:
            continue
        if _float(row["budget_s"]) != args.budget or row["train_images"] != args.train_images:
            continue
        if args.contenders and row["contender"] not in args.contenders:
            continue
        if args.seeds and int(row["seed"]) not in args.seeds:
            continue
        if row.get("error"):
            continue
        key = (row["contender"], row["seed"])
        if key not in kept or row["timestamp"] >= kept[key]["timestamp"]:
            kept[key] = row
    return sorted(kept.values(), key=lambda r: (r["contender"], int(r["seed"])))


def recorded_baseline(row: dict[str, str]) -> str:
    """The baseline the row's own invocation raced against (versus.py's --baseline, default cnnsearch-random)."""
    found = re.search(r"--baseline[ =](\S+)", row.get("command", ""))
    return found.group(1).strip("'\"") if found else "cnnsearch-random"


def run_result(row: dict[str, str], work_dirs: list[Path]) -> Result | None:
    """The contender's trials from its kept run folder `<contender>-s<seed>`, timed from the run's
    creation: of the folders by that name, the newest one created before the row was recorded."""
    name, recorded = f"{row['contender']}-s{row['seed']}", datetime.fromisoformat(row["timestamp"])
    found: list[tuple[datetime, Path]] = []
    for work in work_dirs:
        run_json = work / "runs" / name / "run.json"
        if run_json.is_file():
            created = datetime.fromisoformat(json.loads(run_json.read_text())["created"])
            if created <= recorded:
                found.append((created, work / "runs"))
    if not found:
        return None
    created, runs = max(found)
    result = Result(row["contender"], int(row["seed"]), _float(row["budget_s"]), wall_s=_float(row["wall_s"]))
    read_study(result, runs, name, created.timestamp())
    return result


def race(rows: list[dict[str, str]], work_dirs: list[Path], baseline: str) -> tuple[list[dict[str, str]], list[str]]:
    """Rows with time_to_baseline_best_s and ratio recomputed from the run folders, and why each
    row that could not be raced was not (it keeps the figures its own invocation recorded)."""
    results = {(r["contender"], r["seed"]): run_result(r, work_dirs) for r in rows}
    raced, missing = [], []
    for row in rows:
        mine, base = results[(row["contender"], row["seed"])], results.get((baseline, row["seed"]))
        if mine is not None and base is not None and not math.isnan(base.final_best):
            level = base.final_best
            own, time_to = base.time_to(level), mine.time_to(level)
            ratio = time_to / own if own > 0 and math.isfinite(own) else math.nan
            raced.append({**row, "time_to_baseline_best_s": str(time_to), "ratio": str(ratio)})
            continue
        why = "no run folder" if mine is None else f"no {baseline} run of that seed" if base is None else ""
        why = why or f"{baseline} completed no trial"
        own_baseline = recorded_baseline(row) == baseline
        kept = "its recorded figures kept" if own_baseline else "recorded against another baseline: left out"
        missing.append(f"{row['contender']} seed {row['seed']} ({why}; {kept})")
        raced.append(row if own_baseline else {**row, "time_to_baseline_best_s": "nan", "ratio": "nan"})
    return raced, missing


def summarise(rows: list[dict[str, str]], order: list[str]) -> list[dict]:
    """versus.py's summary rows, from CSV rows (the ratio is the one recorded with each row)."""
    out = []
    for name in order:
        mine = [r for r in rows if r["contender"] == name]
        accs = [a for a in (_float(r["test_acc"]) for r in mine) if not math.isnan(a)]
        ratios = [x for x in (_float(r["ratio"]) for r in mine) if not math.isnan(x)]
        times = [x for x in (_float(r["time_to_baseline_best_s"]) for r in mine) if not math.isnan(x)]
        params = [_float(r["params"]) for r in mine if r["params"]]
        out.append(
            {
                "contender": name,
                "seeds": [int(r["seed"]) for r in mine],
                "test_mean": statistics.fmean(accs) if accs else math.nan,
                "test_sd": statistics.stdev(accs) if len(accs) > 1 else math.nan,
                "params": _common.median(params) if params else math.nan,
                "trials": statistics.fmean(_float(r["trials_finished"]) for r in mine) if mine else math.nan,
                "cut_share": _common.median([_float(r["cut_share"]) for r in mine]) if mine else math.nan,
                "time_to_base_s": _common.median(times) if times else math.nan,
                "ratio": _common.median(ratios) if ratios else math.nan,
                "wall_s": statistics.fmean(_float(r["wall_s"]) for r in mine) if mine else math.nan,
                "over": sum(r["over"] == "True" for r in mine),
                "runs": len(mine),
                "failed": 0,
            }
        )
    return out


def paired_leads(rows: list[dict[str, str]], ours: str, other: str) -> list[tuple[int, float]]:
    """(seed, points of test accuracy ours - other) for every seed both have."""
    by = {(r["contender"], int(r["seed"])): _float(r["test_acc"]) for r in rows}
    seeds = sorted({seed for name, seed in by if name == ours} & {seed for name, seed in by if name == other})
    return [(seed, 100 * (by[(ours, seed)] - by[(other, seed)])) for seed in seeds]


def _race_cell(value: float, spec: str) -> str:
    return "–" if math.isnan(value) else "never" if math.isinf(value) else format(value, spec)


def per_seed_table(rows: list[dict[str, str]]) -> str:
    return _common.markdown_table(
        [
            "contender",
            "seed",
            "test acc",
            "params",
            "trials",
            "outcomes",
            "s to best",
            "ratio",
            "wall s",
            "commit",
            "recorded",
        ],
        [
            [
                r["contender"],
                r["seed"],
                f"{_float(r['test_acc']):.2%}",
                r["params"],
                r["trials_finished"],
                json.dumps(json.loads(r["outcomes"] or "{}")),
                _race_cell(_float(r["time_to_baseline_best_s"]), ".0f"),
                _race_cell(_float(r["ratio"]), ".2f"),
                f"{_float(r['wall_s']):.0f}",
                commit_of(r),
                r["timestamp"][:16],
            ]
            for r in rows
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", type=Path, default=CSV, help="The rows to read [bench/results/versus.csv].")
    parser.add_argument("--commit", action="append", default=[], help="Keep rows of this commit (prefix; repeat).")
    parser.add_argument("--since", default="", help="Keep rows recorded at or after this ISO time.")
    parser.add_argument("--budget", type=float, default=600.0, help="Seconds per contender [600].")
    parser.add_argument("--train-images", default="10000", help="Training subset as recorded, or 'all' [10000].")
    parser.add_argument("--contenders", type=lambda s: s.split(","), default=[], help="Comma-separated [all].")
    parser.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[], help="e.g. 0,1,2")
    parser.add_argument("--baseline", default="cnnsearch-random", help="Whose time the ratios were taken against.")
    parser.add_argument(
        "--race-runs",
        type=Path,
        action="append",
        default=[],
        help="A versus.py --work folder whose run folders time the race to the baseline across invocations (repeat).",
    )
    parser.add_argument("--record", action="store_true", help="Also append the summary to bench/RESULTS.md.")
    args = parser.parse_args()
    rows = select(read_rows(args.csv), args)
    if not rows:
        raise SystemExit("no row of versus.csv matches these filters")
    unraced: list[str] = []
    if args.race_runs:
        rows, unraced = race(rows, args.race_runs, args.baseline)
    order = args.contenders or sorted({r["contender"] for r in rows}, key=lambda n: (n != "cnnsearch", n))
    summary = summarise(rows, order)
    full = args.train_images == "all"
    lines = verdicts(summary, full=full)
    leads = paired_leads(rows, "cnnsearch", "peer")
    if leads:
        values = [lead for _, lead in leads]
        spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
        lines.append(
            "paired by seed, cnnsearch - peer: "
            + ", ".join(f"seed {seed} {lead:+.2f}" for seed, lead in leads)
            + f"; mean {statistics.fmean(values):+.2f}{spread} points (target >= {LEAD_TARGET[full]:g} on the mean)"
        )
    seeds_of = "; ".join(f"{row['contender']} seeds {','.join(map(str, row['seeds']))}" for row in summary)
    notes = [
        f"Read back from {args.csv.name} (newest row per contender and seed"
        + (f", commits {', '.join(args.commit)}" if args.commit else "")
        + (f", recorded since {args.since}" if args.since else "")
        + f"): {seeds_of}. "
        + (
            f"The race to {args.baseline}'s final best of the same seed was rerun from the run folders in "
            + ", ".join(map(str, args.race_runs))
            + " (seconds from each run's creation"
            + (f"; not raced: {', '.join(unraced)}" if unraced else "")
            + ")"
            if args.race_runs
            else f"The ratio is each row's own, against {args.baseline} of the same seed and invocation"
        )
        + f" (target <= {TARGET_RATIO:.2f}).",
    ]
    body = "\n\n".join(
        [summary_table(summary, args.baseline), *("- " + line for line in lines), per_seed_table(rows), *notes]
    )
    print(body)
    if args.record:
        images = "all 60,000 training images" if full else f"{int(args.train_images):,}-image subset"
        _common.append_section(f"Head to head over seeds: {images}, {args.budget:g} s end to end", body)
        _common.echo(f"section appended to {_common.RESULTS_MD}")


if __name__ == "__main__":
    main()
