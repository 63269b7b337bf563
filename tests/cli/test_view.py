"""The live view drawn into a console of a terminal's width."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from cnnsearch.cli.view import ProgressState, RunningTrial, render


@pytest.mark.parametrize("width", [80, 160])
def test_the_overall_bar_has_its_own_line_and_the_table_header_fits(width: int) -> None:
    state = ProgressState(name="x", target=10, counts={"complete": 5})
    state.running[3] = RunningTrial(3, "c8k3-gap", 5, epoch=2, val_acc=0.5, predicted_s=75.0)
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(render(state))
    lines = console.file.getvalue().splitlines()
    (bar,) = [line for line in lines if "━" in line and "c8k3" not in line]
    assert set(bar.strip()) == {"━"}, f"the bar shares its line: {bar!r}"
    (header,) = [line for line in lines if line.startswith("trial")]
    assert header.split() == ["trial", "candidate", "epoch", "val", "acc", "predicted", "device"]
    assert all(len(line) <= width for line in lines)
    (row,) = [line for line in lines if "c8k3" in line]
    assert "1m15s" in row, "the cost model's predicted time of the running candidate"


def test_a_timed_search_without_a_trial_count_shows_time_not_a_total() -> None:
    import time

    from cnnsearch.search.settings import UNLIMITED_TRIALS

    state = ProgressState(name="x", target=UNLIMITED_TRIALS, counts={"complete": 4, "too_slow": 3})
    state.deadline = state.started + 600
    state.started -= 300  # half the budget gone
    state.deadline = time.monotonic() + 300
    console = Console(file=io.StringIO(), width=100, color_system=None)
    console.print(render(state))
    text = console.file.getvalue()
    assert "4 trials" in text and str(UNLIMITED_TRIALS) not in text, "too_slow candidates never trained: not counted"
    assert "3 skipped" in text
