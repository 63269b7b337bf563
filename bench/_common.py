"""Shared plumbing of the benchmark scripts: machine facts, result rows, the RESULTS.md log.

Every script appends its rows to `bench/results/<name>.csv` and a summary section to
`bench/RESULTS.md`; both carry the machine, the versions and the exact command, so a figure
can always be traced to what produced it. Nothing here imports torch: `startup.py` and
`scale.py` must measure processes that do not load it.
"""

from __future__ import annotations

import csv
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# What `cnnsearch` (cli.main) sets before torch loads: idle OpenMP threads sleep instead of
# spinning. The benchmarks call the library directly, so they set it too, before any torch import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
RESULTS_MD = BENCH_DIR / "RESULTS.md"
PACKAGES = ("torch", "optuna", "pytorch-lightning", "numpy", "pandas", "cnnsearch")

# The first columns of every CSV, in this order; a script's own columns follow.
COMMON_COLUMNS = ("timestamp", "machine", "load_avg", "versions", "command")


def setup_paths() -> None:
    """Make `import cnnsearch` and `import synthetic` (tests/synthetic.py) work from any cwd."""
    for path in (str(REPO), str(REPO / "tests")):
        if path not in sys.path:
            sys.path.insert(0, path)


def gpu_name() -> str:
    """The GPU's name when one is visible; asks torch only if it is already imported."""
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                return torch.cuda.get_device_name(0)
        except Exception:  # a broken driver must not stop a benchmark from recording
            return ""
        return ""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
            )
            return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""
        except (OSError, subprocess.SubprocessError):
            return ""
    return ""


def machine() -> str:
    """One line: CPU, core count and GPU, e.g. `x86_64 / 2 cores / no GPU`."""
    cpu = platform.processor() or platform.machine()
    model = _cpu_model()
    if model:
        cpu = f"{cpu} {model}"
    gpu = gpu_name()
    return f"{cpu} / {os.cpu_count()} cores / {gpu or 'no GPU'}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def load_avg() -> str:
    """The 1-minute load average against the core count: `4.6/2` means other work competes."""
    try:
        return f"{os.getloadavg()[0]:.1f}/{os.cpu_count()}"
    except OSError:
        return "?"


def versions() -> dict[str, str]:
    from cnnsearch.run.folder import package_versions

    return package_versions(PACKAGES)


def git_commit() -> str:
    """The repo's commit, with `+dirty` when cnnsearch/ has uncommitted changes (others edit it too)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "cnnsearch"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (head or "?") + ("+dirty" if dirty else "")


def versions_text() -> str:
    return " ".join(f"{name}={value}" for name, value in versions().items()) + f" commit={git_commit()}"


def command() -> str:
    """The exact command that is running, with the interpreter as typed from the repo root."""
    executable = Path(sys.executable)
    try:
        shown = os.path.relpath(executable, REPO) if executable.is_relative_to(REPO) else str(executable)
    except ValueError:
        shown = str(executable)
    script = Path(sys.argv[0])
    if script.is_absolute() and script.is_relative_to(REPO):
        script = script.relative_to(REPO)
    return shlex.join([shown, str(script), *sys.argv[1:]])


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def append_rows(name: str, rows: Iterable[dict[str, Any]]) -> Path:
    """Append rows to bench/results/<name>.csv; a new column widens the file's header."""
    rows = list(rows)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.csv"
    stamp = {
        "timestamp": now(),
        "machine": machine(),
        "load_avg": load_avg(),
        "versions": versions_text(),
        "command": command(),
    }
    rows = [{**stamp, **row} for row in rows]
    old_rows: list[dict[str, Any]] = []
    old_columns: list[str] = []
    if path.is_file() and path.stat().st_size:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            old_columns = list(reader.fieldnames or [])
            old_rows = list(reader)
    columns = list(old_columns or COMMON_COLUMNS)
    for row in rows:
        columns += [key for key in row if key not in columns]
    mode = "a" if columns == old_columns else "w"  # rewrite only when the header grows
    with path.open(mode, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        if mode == "w":
            writer.writeheader()
            writer.writerows(old_rows)
        writer.writerows(_cell(row) for row in rows)
    return path


def _cell(row: dict[str, Any]) -> dict[str, Any]:
    return {key: (f"{value:.6g}" if isinstance(value, float) else value) for key, value in row.items()}


def append_section(title: str, body: str, *, note: str = "") -> None:
    """Append `## title` with machine, versions, command and load to bench/RESULTS.md."""
    lines = [
        f"## {title} ({now()})",
        "",
        f"- machine: {machine()}; 1-min load average {load_avg()} at the end of the run"
        + (" (other work competes for the CPU: compare ratios, not absolute times)" if _loaded() else ""),
        f"- versions: {versions_text()}",
        f"- command: `{command()}`; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '')}",
    ]
    if note:
        lines.append(f"- note: {note}")
    lines += ["", body.rstrip(), "", ""]
    if not RESULTS_MD.is_file():
        RESULTS_MD.write_text(
            "# Benchmark results\n\nSections are appended by the scripts in bench/ (newest last).\n\n"
        )
    with RESULTS_MD.open("a") as handle:
        handle.write("\n".join(lines))


def _loaded() -> bool:
    try:
        return os.getloadavg()[0] > 0.75 * (os.cpu_count() or 1)
    except OSError:
        return False


def median(values: Sequence[float]) -> float:
    values = [value for value in values if value == value]  # drop NaN
    return statistics.median(values) if values else float("nan")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(value) for value in row) + " |")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "–"
        if value == float("inf"):
            return "never"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}"
    return str(value)


def verdict(met: bool) -> str:
    return "**met**" if met else "**missed**"


def echo(message: str) -> None:
    """Progress to stderr, so stdout stays for results."""
    print(message, file=sys.stderr, flush=True)
