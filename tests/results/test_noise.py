"""Each validation accuracy's 95% interval and the trials tied with the best: the statistics
against their formulas, and the leaderboard (terminal, csv/json, HTML) of synthetic runs through
the real CLI.
"""

from __future__ import annotations

import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_env, run_cli
from rich.console import Console
from synthetic import make_synthetic_run  # tests/ is on sys.path (conftest.py's folder)

from cnnsearch import results as report
from cnnsearch.results import noise
from cnnsearch.results.leaderboard import tie_note
from cnnsearch.run.folder import RunDir


def render(renderable, width: int = 200) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def reference_tied(p1: float, p2: float, n: int) -> bool:
    """The README's rule, written out: |p1 - p2| <= 1.96 sqrt(p1(1-p1)/n + p2(1-p2)/n)."""
    return abs(p1 - p2) <= 1.96 * math.sqrt(p1 * (1 - p1) / n + p2 * (1 - p2) / n)


def wide_cli(*args: str) -> subprocess.CompletedProcess:
    """`cnnsearch ARGS` on a 250-column terminal: no cell wraps."""
    return subprocess.run(
        [sys.executable, "-m", "cnnsearch", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**cli_env(), "COLUMNS": "250"},
        check=False,
    )


def with_val_size(runs_dir: Path, name: str, val_size: int | None) -> RunDir:
    """A 60-trial synthetic run whose run.json records `val_size` validation images (None: none)."""
    run = make_synthetic_run(runs_dir, name, 60, seed=1)
    info = run.read_info()
    info.split_sizes = {} if val_size is None else {"train": 1222, "val": val_size, "test": 360}
    run.write_info(info)
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("runs")
    make_synthetic_run(folder, "small", 60, seed=1)  # digits' split: 216 validation images
    with_val_size(folder, "large", 1765)
    with_val_size(folder, "unknown", None)
    return folder


def test_statistics_match_their_formulas() -> None:
    assert noise.standard_error(0.913, 1765) == pytest.approx(0.0067, abs=5e-5)  # the issue's ±0.7 points
    assert noise.half_width(0.913, 1765) == pytest.approx(1.96 * math.sqrt(0.913 * 0.087 / 1765))
    assert noise.interval(0.99, 100) == (pytest.approx(0.99 - 1.96 * math.sqrt(0.0099 / 100)), 1.0)  # clipped
    assert noise.interval_text(0.913, 1765) == "91.30% ±1.31" and noise.interval_text(0.913, None) == "91.30%"
    assert noise.tied(0.913, 0.900, 1765) and not noise.tied(0.913, 0.890, 1765)
    assert noise.tied(1.0, 1.0, 50) and noise.tied(0.5, 0.5, 10)  # equal scores always tie
    for p1, p2, n in [(0.913, 0.895, 1765), (0.95, 0.91, 216), (0.6, 0.62, 30), (1.0, 0.99, 216), (0.5, 0.3, 40)]:
        assert noise.tied(p1, p2, n) == reference_tied(p1, p2, n) == noise.tied(p2, p1, n)
    with pytest.raises(ValueError, match=r"at least 1 image, but got n=0"):
        noise.half_width(0.5, 0)


@pytest.mark.parametrize("name, val_size", [("small", 216), ("large", 1765)])
def test_json_interval_width_follows_the_validation_size(runs: Path, name: str, val_size: int) -> None:
    done = run_cli("leaderboard", name, "--format", "json", "--runs-dir", str(runs))
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert len(rows) > 10
    best = rows[0]
    for row in rows:
        p = row["val_acc"]
        assert row["val_ci"] == pytest.approx(1.96 * math.sqrt(p * (1 - p) / val_size), rel=1e-12)
        assert row["tied"] == reference_tied(best["val_acc"], p, val_size)
    # More validation images, narrower intervals and fewer ties: here some are, some are not.
    assert 1 < sum(row["tied"] for row in rows) < len(rows)
    csv_header = run_cli("leaderboard", name, "--format", "csv", "--runs-dir", str(runs)).stdout.splitlines()[0]
    assert csv_header.startswith("rank,trial,state,val_acc,val_ci,tied,params,")


def test_table_shows_each_interval_and_marks_the_ties(runs: Path) -> None:
    rows = json.loads(run_cli("leaderboard", "large", "--format", "json", "--runs-dir", str(runs)).stdout)
    done = wide_cli("leaderboard", "large", "--top", "100", "--runs-dir", str(runs))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    split = [re.split(r"\s*│\s*", line) for line in lines]
    table = {int(cells[2]): cells for cells in split if len(cells) > 4 and cells[2].isdigit()}
    assert len(table) == len(rows)
    for row in rows:
        cells = table[row["trial"]]
        assert f"{row['val_acc']:.2%} ±{100 * row['val_ci']:.2f}" in cells
        assert ("≈" in cells) == row["tied"]
    best = rows[0]
    others = sum(row["tied"] for row in rows) - 1
    below = lines[next(index for index, line in enumerate(lines) if line.startswith("└")) + 1 :]
    assert below[0] == (
        f"≈ tied: {others} other trials within the noise of the best, trial {best['trial']} "
        f"({best['val_acc']:.2%} ±{100 * best['val_ci']:.2f}): a difference within 1.96 standard errors, "
        "sqrt(p1(1-p1)/n + p2(1-p2)/n), n = 1,765 validation images; ± is the 95% interval"
    )
    # --top cuts what is shown, not the count of ties.
    top = wide_cli("leaderboard", "large", "--top", "2", "--runs-dir", str(runs)).stdout
    assert below[0] in top.splitlines()


def test_rendered_board_html_and_a_run_without_a_validation_size(runs: Path) -> None:
    board = report.leaderboard_rows(RunDir(runs, "small"))
    text = render(report.leaderboard_table(board))
    best = board.rows[0]
    assert re.search(rf"│\s+{best['trial']} │ complete\s+│ {best['val_acc']:.2%} ±\d\.\d\d │ ≈", text)
    page = report.write_report(RunDir(runs, "small")).read_text()
    assert f"{best['val_acc']:.2%} ±" in page and "<th>tied</th>" in page
    assert tie_note(board) is not None and tie_note(board) in page

    unknown = report.leaderboard_rows(RunDir(runs, "unknown"))
    assert set(unknown.column("val_ci")) == {None} and set(unknown.column("tied")) == {None}
    assert tie_note(unknown) is None
    text = render(report.leaderboard_table(unknown))
    assert "±" not in text and "tied" not in text and "≈" not in text
    done = run_cli("leaderboard", "unknown", "--runs-dir", str(runs))
    assert done.returncode == 0 and "≈" not in done.stdout and "±" not in done.stdout
