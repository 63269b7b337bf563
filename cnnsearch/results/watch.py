"""Owns the watch view (`cnnsearch leaderboard --watch`): a summary line, the top trials and the
running ones with their progress and heartbeats.
"""

from __future__ import annotations

import datetime
import math
import time
from typing import TYPE_CHECKING, Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from cnnsearch.run.folder import RunDir

if TYPE_CHECKING:  # imported where used: `cnnsearch leaderboard` draws its table without them
    pass
from cnnsearch.results.facts import STOPPED_NOTE, TRAINED_TO_THE_END, arch_epochs, study_facts
from cnnsearch.results.leaderboard import make_board, run_objectives, sort_and_cut, validation_size
from cnnsearch.results.render import leaderboard_table, percent
from cnnsearch.run.liveness import HEARTBEAT_GRACE_S, heartbeat_age

WATCH_TOP = 10  # leaderboard rows in the watch view


def watch_view(run: RunDir, *, study: Any = None, now: float | None = None, width: int | None = None) -> RenderableType:
    """The live view: a summary line, the top 10 and the RUNNING trials with their progress.

    `width` (the console's) lets the leaderboard leave out minor columns on narrow terminals.
    """
    now = time.time() if now is None else now
    info = run.read_info()
    study = study if study is not None else run.load_study(info)
    facts = study_facts(study, info, run=run, now=now)
    frame = make_board(facts, run_objectives(study, info), include_all=False, val_size=validation_size(info))
    outcomes = [fact.outcome for fact in facts]
    running = [fact for fact in facts if fact.outcome == "running"]
    stamp = datetime.datetime.fromtimestamp(now).strftime("%H:%M:%S")
    stopped = f", {outcomes.count('stopped')} stopped ({STOPPED_NOTE})" if "stopped" in outcomes else ""
    summary = Text(
        f"{run.name}: {len(facts)} trials, {sum(o in TRAINED_TO_THE_END for o in outcomes)} complete, "
        f"{outcomes.count('pruned')} pruned, {len(running)} running{stopped} (updated {stamp})"
    )
    board = leaderboard_table(sort_and_cut(frame, top=WATCH_TOP), title=f"top {WATCH_TOP}", width=width)
    if not running:
        return Group(summary, board, Text("No trials running.", style="dim"))

    {trial.number: trial for trial in study.get_trials(deepcopy=False)}
    table = Table(title=Text("running"), header_style="bold")
    for header, justify in (
        ("trial", "right"),
        ("worker", "left"),
        ("device", "left"),
        ("epoch", "right"),
        ("val acc", "right"),
        ("best", "right"),
        ("running for", "right"),
        ("heartbeat", "right"),
    ):
        # Only the worker name may be shortened on a narrow terminal.
        table.add_column(
            header,
            justify="right" if justify == "right" else "left",
            no_wrap=True,
            min_width=None if header == "worker" else len(header),
        )
    for fact in running:
        record = fact.record
        total = arch_epochs(record) or info.epochs
        current = record.current_epoch if record.current_epoch is not None else len(fact.curve)
        finite = [value for value in fact.curve if not math.isnan(value)]
        elapsed = (datetime.datetime.fromtimestamp(now) - fact.started).total_seconds() if fact.started else None
        age = heartbeat_age(run, fact.number, now)
        if age is None:
            beat = Text("none", style="dim")
        elif age < HEARTBEAT_GRACE_S:
            beat = Text(f"{age:.0f} s ago")
        else:
            beat = Text(f"stale ({_duration(age)})", style="red")
        table.add_row(
            Text(str(fact.number)),
            Text(record.worker),
            Text(record.device),
            Text(f"{current} / {total}" if total else str(current)),
            Text(percent(finite[-1]) if finite else "-"),
            Text(percent(max(finite)) if finite else "-"),
            Text(_duration(elapsed) if elapsed is not None else "-"),
            beat,
        )
    return Group(summary, board, table)


def _duration(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:02.0f} s"
    return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:02.0f} min"
