"""Run every benchmark in sequence (`make bench` runs `bench/run_all.py --quick`).

Each script appends its rows to bench/results/<name>.csv and a section to bench/RESULTS.md.
A script that fails is reported and the others still run; the exit status is 1 if any failed.

    .venv/bin/python bench/run_all.py --quick       # small settings, about 10 minutes on a 2-core CPU
    .venv/bin/python bench/run_all.py               # each script's defaults
    .venv/bin/python bench/run_all.py --full        # larger settings (an hour or more on CPU)
    .venv/bin/python bench/run_all.py --quick --only startup,scale
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SCRIPTS = (
    "startup",
    "scale",
    "swarm_settings",
    "throughput",
    "overhead",
    "workers",
    "search_efficiency",
)  # cheapest first
# Extra arguments per script and mode; every script also understands --quick itself.
MODES = {
    "quick": {name: ["--quick"] for name in SCRIPTS},
    "default": {name: [] for name in SCRIPTS},
    "full": {
        "startup": ["--rounds", "9"],
        "scale": ["--repeats", "5"],
        "swarm_settings": ["--seeds", "60"],
        "throughput": ["--full"],
        "overhead": ["--trials", "40"],
        "workers": ["--rounds", "3"],
        "search_efficiency": ["--full", "--export"],
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="small settings for every script")
    group.add_argument("--full", action="store_true", help="larger settings for every script")
    parser.add_argument("--only", default="", help="comma list of scripts to run (default: all)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="pass --threads N to the scripts that train (throughput, overhead, search_efficiency)",
    )
    args = parser.parse_args()
    mode = "quick" if args.quick else "full" if args.full else "default"
    chosen = [name.strip() for name in args.only.split(",") if name.strip()] or list(SCRIPTS)
    unknown = [name for name in chosen if name not in SCRIPTS]
    if unknown:
        parser.error(f"unknown script {unknown[0]!r}; valid: {', '.join(SCRIPTS)}")

    failed = []
    for name in chosen:
        command = [sys.executable, str(BENCH / f"{name}.py"), *MODES[mode][name]]
        if args.threads and name in ("throughput", "overhead", "search_efficiency"):
            command += ["--threads", str(args.threads)]
        print(f"== {' '.join(command)}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        code = subprocess.call(command)
        print(f"== {name}: exit {code} after {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)
    print(f"results: {BENCH / 'RESULTS.md'} and {BENCH / 'results'}/", file=sys.stderr)


if __name__ == "__main__":
    main()
