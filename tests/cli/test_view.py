"""The live view drawn into a console of a terminal's width."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from cnnsearch.cli.view import ProgressState, RunningTrial, render


@pytest.mark.parametrize("width", [80, 160])
def test_the_overall_bar_has_its_own_line_and_the_table_header_fits(width: int) -> None:
    state = ProgressState(name="x", target=10, counts={"complete": 5})
    state.running[3] = RunningTrial(3, "c8k3-gap", 5, epoch=2, val_acc=0.5)
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(render(state))
    lines = console.file.getvalue().splitlines()
    (bar,) = [line for line in lines if "━" in line and "c8k3" not in line]
    assert set(bar.strip()) == {"━"}, f"the bar shares its line: {bar!r}"
    (header,) = [line for line in lines if line.startswith("trial")]
    assert header.split() == ["trial", "candidate", "epoch", "val", "acc", "device"]
    assert all(len(line) <= width for line in lines)
