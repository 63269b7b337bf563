"""Owns the leaderboard (plain rows, or a DataFrame) and everything drawn from it.

One leaderboard, built once from the study, rendered into every format: a rich table for the
terminal, csv / json / markdown text, the trial detail view (`cnnsearch show`), the live
watch view and a self-contained HTML report with its plots.

Reads runs through `rundir` and architectures through `spec`; knows the trial contract the
search module writes (user attributes "outcome", "val_acc", "params", ...). Must not import
torch or Lightning, directly or through another module: `cnnsearch leaderboard` starts
instantly and works where they are not installed. Optuna is imported only where a function
needs more than a study handed to it; matplotlib only inside the plotting functions. Library
functions never print: they return DataFrames, strings and rich renderables.

The terminal table, the watch view and the HTML report work on a `Board` (plain rows); pandas
(csv / json / markdown, `leaderboard_frame`, `runs_frame`), numpy (Pareto ranks, plots) and
`spec` (the layer table) are imported inside the functions that need them, so importing this
module costs none of them (pandas alone was 0.15-0.2 s of `cnnsearch leaderboard`).
"""
from __future__ import annotations

import base64
import dataclasses
import datetime
import difflib
import html
import io
import json
import math
import os
import re
import socket
import sys
import time
import tomllib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from cnnsearch.errors import InfeasibleArchitecture, UserError
from cnnsearch.rundir import (
    RunDir,
    RunInfo,
    describe_storage,
    find_trial,
    list_run_names,
    write_atomic,
)

if TYPE_CHECKING:  # imported where used: `cnnsearch leaderboard` draws its table without them
    import numpy as np
    import pandas as pd

    from cnnsearch.spec import Architecture

EMPTY_MESSAGE = "No finished trials yet."
COLUMNS = ("rank", "trial", "state", "val_acc", "params", "flops", "latency_ms", "train_s", "epochs", "arch")
INTEGER_COLUMNS = ("rank", "params", "flops", "epochs")  # nullable Int64: missing stays missing
# Sorting direction per column: better first. Everything else sorts ascending.
DESCENDING_COLUMNS = frozenset({"val_acc", "front"})
FORMATS = ("csv", "json", "markdown")

RANKED_OUTCOMES = ("complete", "duplicate", "pruned")  # have a validation accuracy worth ranking
TRAINED_OUTCOMES = ("complete", "duplicate")  # trained to the end: may sit on a Pareto front
FAILED_OUTCOMES = ("oom", "nan", "timeout", "error", "failed")  # shown as "failed: <outcome>"
SKIPPED_OUTCOMES = ("infeasible", "over_budget")  # never trained: the candidate could not be
# Outcome when a trial carries no "outcome" attribute (e.g. a worker died before writing it).
STATE_OUTCOMES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}
# Objective name in run.json -> (leaderboard column, maximise?).
OBJECTIVE_COLUMNS = {
    "accuracy": ("val_acc", True),
    "params": ("params", False),
    "flops": ("flops", False),
    "latency": ("latency_ms", False),
    "latency_ms": ("latency_ms", False),
}
HEARTBEAT_FRESH_S = 60.0  # a RUNNING trial whose heartbeat is older than this has a dead worker
# A RUNNING trial whose worker is gone (e.g. SIGKILL): Optuna still says RUNNING until a search resumes it.
STOPPED_NOTE = "worker gone; resumes on the next search"
LATENCY_BATCH_MAX = 256  # train measures latency on min(batch_size, 256) images
TIME_OUTCOMES = (  # "where the time went", in this order
    "complete", "pruned", "infeasible", "over_budget", "oom", "nan", "timeout", "error", "failed",
    "interrupted", "duplicate", "running", "stopped",
)
REPORT_TOP = 20  # leaderboard rows in the HTML report
PLOT_NAMES = ("best_so_far", "time", "accuracy_vs_cost", "importance", "learning_curves")  # report/<name>.png
CURVES_TOP = 5  # learning curves drawn in full colour
WATCH_TOP = 10  # leaderboard rows in the watch view


# ---- one trial, read once -----------------------------------------------------------------
@dataclass
class TrialFacts:
    """What the report needs from one Optuna trial, read from its user attributes."""

    number: int
    outcome: str  # "complete", "pruned", ..., or "running"
    state: str  # label for tables: "failed: nan", "duplicate of #3"
    val_acc: float | None  # best validation accuracy, fraction 0..1
    params: int | None
    flops: int | None
    latency_ms: float | None
    train_s: float | None
    epochs: int | None  # epochs run (where a pruned trial stopped)
    arch: str  # the compact one-line form
    reason: str
    curve: list[float] = field(default_factory=list)  # validation accuracy per epoch
    values: tuple[float, ...] | None = None  # Optuna's objective values
    started: datetime.datetime | None = None
    finished: datetime.datetime | None = None

    @property
    def ranked(self) -> bool:
        return self.outcome in RANKED_OUTCOMES and self.val_acc is not None


def trial_facts(
    trial: Any, *, accuracy_index: int = 0, epochs_budget: int | None = None, alive: bool = True
) -> TrialFacts:
    """Read one `optuna.trial.FrozenTrial` (or anything shaped like it) into `TrialFacts`.

    `alive=False` says the worker of a RUNNING trial is gone: its outcome becomes "stopped".
    """
    attrs = trial.user_attrs
    outcome = trial_outcome(trial)
    if outcome == "running" and not alive:
        outcome = "stopped"
    curve = _floats(attrs.get("val_acc"))
    if not curve and trial.intermediate_values:
        curve = _floats([trial.intermediate_values[step] for step in sorted(trial.intermediate_values)])
    val_acc = _number(attrs.get("best_val_acc"))
    if val_acc is None and any(math.isfinite(value) for value in curve):
        val_acc = max(value for value in curve if math.isfinite(value))
    values = tuple(trial.values) if trial.values is not None else None
    if val_acc is None and values is not None and outcome in TRAINED_OUTCOMES and accuracy_index < len(values):
        val_acc = float(values[accuracy_index])
    reason = str(attrs.get("reason", ""))
    if outcome in ("running", "stopped"):
        current = attrs.get("current_epoch", len(curve))
        total = _arch_epochs(attrs) or epochs_budget
        epoch = f"epoch {current} of {total}" if total else f"epoch {current}"
        reason = f"training, {epoch}" if outcome == "running" else f"{STOPPED_NOTE} (it was at {epoch})"
    return TrialFacts(
        number=trial.number,
        outcome=outcome,
        state=_state_label(outcome, attrs),
        val_acc=val_acc,
        params=_integer(attrs.get("params")),
        flops=_integer(attrs.get("flops")),
        latency_ms=_number(attrs.get("latency_ms")),
        train_s=_number(attrs.get("train_seconds")),
        epochs=_integer(attrs.get("epochs_run", attrs.get("current_epoch", len(curve) if curve else None))),
        arch=str(attrs.get("compact", "")),
        reason=reason,
        curve=curve,
        values=values,
        started=trial.datetime_start,
        finished=trial.datetime_complete,
    )


def trial_outcome(trial: Any) -> str:
    """The contract's outcome of a trial; Optuna's state when the trial has none (yet)."""
    state = trial.state.name
    if state in ("RUNNING", "WAITING"):
        return STATE_OUTCOMES[state]
    return str(trial.user_attrs.get("outcome") or STATE_OUTCOMES.get(state, state.lower()))


def _state_label(outcome: str, attrs: dict[str, Any]) -> str:
    if outcome == "duplicate":
        original = attrs.get("duplicate_of")
        return f"duplicate of #{original}" if original is not None else "duplicate"
    if outcome in FAILED_OUTCOMES and outcome != "failed":
        return f"failed: {outcome}"
    return outcome.replace("_", " ")


def _arch_epochs(attrs: dict[str, Any]) -> int | None:
    arch = attrs.get("arch")
    if isinstance(arch, dict):
        return _integer(arch.get("train", {}).get("epochs"))
    return None


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _integer(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None else None


def _floats(values: Any) -> list[float]:
    if not isinstance(values, (list, tuple)):
        return []
    out = []
    for value in values:
        number = _number(value)
        out.append(number if number is not None else math.nan)
    return out


# ---- the leaderboard -----------------------------------------------------------------------
@dataclass
class Board:
    """The leaderboard as plain rows, best first: what `leaderboard_frame` holds, without pandas.

    `columns` are the frame's columns, in order; each row is a dict holding at least those keys,
    with None where a value is missing. The terminal table, the watch view and the HTML report
    render a Board; `leaderboard_frame` turns one into a DataFrame for csv / json / markdown.
    """

    columns: list[str]
    rows: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def empty(self) -> bool:
        return not self.rows

    def column(self, name: str) -> list[Any]:
        return [row[name] for row in self.rows]


Leaderboard = Union[Board, "pd.DataFrame"]  # what sort_and_cut, display_cells and leaderboard_table take


def leaderboard_rows(run: RunDir, *, include_all: bool = False, study: Any = None) -> Board:
    """One row per trial, best first, as a `Board` (see `leaderboard_frame` for the columns)."""
    info = run.read_info()
    study = study if study is not None else run.load_study(info)
    facts = _study_facts(study, info, run=run)
    return _board(facts, _objectives(study, info), include_all=include_all)


def leaderboard_frame(run: RunDir, *, include_all: bool = False, study: Any = None) -> pd.DataFrame:
    """One row per trial, best first.

    Columns: rank, trial, state, val_acc (fraction), params, flops, latency_ms, train_s,
    epochs, arch; `front` (after rank) for multi-objective runs; `reason` with `include_all`.
    Default rows are the trained trials (complete and duplicate); `include_all` adds the
    pruned ones with a val_acc (ranked after every trained trial) and every other trial,
    unranked, after them.
    """
    return board_frame(leaderboard_rows(run, include_all=include_all, study=study))


def _study_facts(study: Any, info: RunInfo, *, run: RunDir | None = None, now: float | None = None) -> list[TrialFacts]:
    """Facts of every trial; with `run`, RUNNING trials whose worker is gone become "stopped"."""
    accuracy_index = info.objective.index("accuracy") if "accuracy" in info.objective else 0
    return [
        trial_facts(
            trial, accuracy_index=accuracy_index, epochs_budget=info.epochs,
            alive=run is None or trial.state.name != "RUNNING" or _worker_alive(run, trial, now),
        )
        for trial in study.get_trials(deepcopy=False)
    ]


@dataclass(frozen=True)
class _Objective:
    name: str
    column: str | None  # leaderboard column, or None: read Optuna's value at `index`
    index: int
    maximize: bool


def _objectives(study: Any, info: RunInfo) -> list[_Objective]:
    """The run's objectives when it has several; empty for single-objective runs."""
    directions = list(study.directions)
    if len(directions) < 2:
        return []
    names = info.objective if len(info.objective) == len(directions) else [f"objective{i}" for i in range(len(directions))]
    objectives = []
    for index, (name, direction) in enumerate(zip(names, directions)):
        column, maximize = OBJECTIVE_COLUMNS.get(name, (None, direction.name == "MAXIMIZE"))
        objectives.append(_Objective(name, column, index, maximize))
    return objectives


def _objective_matrix(facts: Sequence[TrialFacts], objectives: Sequence[_Objective]) -> np.ndarray:
    import numpy as np

    matrix = np.full((len(facts), len(objectives)), np.nan)
    for row, fact in enumerate(facts):
        for col, objective in enumerate(objectives):
            if objective.column is not None:
                value = getattr(fact, objective.column)
            else:
                value = fact.values[objective.index] if fact.values and objective.index < len(fact.values) else None
            if value is not None:
                matrix[row, col] = value
    return matrix


def _pareto_ranks_2d(costs: np.ndarray) -> np.ndarray:
    """Non-dominated sorting of two costs to minimise, by a sweep (bench/scale.py checks it
    against the general version). Points are visited by first cost, then second; each front
    keeps its member with the smallest second cost, and a binary search finds the first front
    that does not dominate the next point."""
    import numpy as np

    ranks = np.zeros(len(costs), dtype=int)
    front_c2: list[float] = []  # per front: the smallest second cost among its members so far
    front_c1: list[float] = []  # that member's first cost
    for index in np.lexsort((costs[:, 1], costs[:, 0])):
        c1, c2 = costs[index]
        low, high = 0, len(front_c2)
        while low < high:
            mid = (low + high) // 2
            if front_c2[mid] < c2 or (front_c2[mid] == c2 and front_c1[mid] < c1):
                low = mid + 1
            else:
                high = mid
        if low == len(front_c2):
            front_c2.append(c2)
            front_c1.append(c1)
        elif c2 < front_c2[low]:
            front_c2[low], front_c1[low] = c2, c1
        ranks[index] = low + 1
    return ranks


def pareto_ranks(points: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """Non-dominated sorting: 1 for the front, 2 for the front of the rest, and so on.

    `points` is (n, k); a point dominates another when it is no worse in every objective and
    better in one. Missing values (NaN) count as the worst possible. Two objectives: a sweep,
    O(n log n); more: pairwise, O(n^2) memory and time.
    """
    import numpy as np

    points = np.asarray(points, dtype=float).reshape(len(points), -1)
    if len(maximize) != points.shape[1]:
        raise ValueError(f"one direction per objective must be given, but got {len(maximize)} for {points.shape[1]}")
    costs = points * np.where(np.asarray(maximize, dtype=bool), -1.0, 1.0)  # minimise everything
    costs = np.where(np.isnan(costs), np.inf, costs)
    if costs.shape[1] == 2:
        return _pareto_ranks_2d(costs)  # every cnnsearch Pareto run: O(n log n), no n x n matrices
    count = len(costs)
    no_worse = np.ones((count, count), dtype=bool)
    better = np.zeros((count, count), dtype=bool)
    for column in costs.T:
        no_worse &= column[:, None] <= column[None, :]
        better |= column[:, None] < column[None, :]
    dominates = no_worse & better  # dominates[i, j]: i dominates j
    dominators = dominates.sum(axis=0)
    ranks = np.zeros(count, dtype=int)
    remaining = np.ones(count, dtype=bool)
    rank = 0
    while remaining.any():
        rank += 1
        front = remaining & (dominators == 0)
        ranks[front] = rank
        remaining &= ~front
        dominators = dominators - dominates[front].sum(axis=0)
    return ranks


def _board(facts: Sequence[TrialFacts], objectives: Sequence[_Objective], *, include_all: bool) -> Board:
    # Pruned trials stopped early on a shorter schedule: shown with --all, ranked after every trained one.
    ranked = [fact for fact in facts if fact.ranked and (include_all or fact.outcome in TRAINED_OUTCOMES)]
    pareto = [math.inf] * len(ranked)
    if objectives:
        trained = [index for index, fact in enumerate(ranked) if fact.outcome in TRAINED_OUTCOMES]
        if trained:
            matrix = _objective_matrix([ranked[index] for index in trained], objectives)
            ranks = pareto_ranks(matrix, [objective.maximize for objective in objectives])
            for index, rank in zip(trained, ranks.tolist()):
                pareto[index] = rank
    # Best first: Pareto rank (multi-objective), accuracy, fewer params, earlier trial.
    order = sorted(
        range(len(ranked)),
        key=lambda i: (
            pareto[i],
            ranked[i].outcome not in TRAINED_OUTCOMES,
            -ranked[i].val_acc,
            ranked[i].params if ranked[i].params is not None else math.inf,
            ranked[i].number,
        ),
    )
    rows = []
    for position, index in enumerate(order, start=1):
        rows.append(_row(ranked[index], position, front=bool(pareto[index] == 1)))
    if include_all:
        rows.extend(_row(fact, None, front=False) for fact in facts if not fact.ranked)

    columns = list(COLUMNS)
    if objectives:
        columns.insert(1, "front")
    if include_all:
        columns.append("reason")
    return Board(columns, rows)


def board_frame(board: Board) -> pd.DataFrame:
    """The Board as a DataFrame: nullable Int64 counts, float64 measures, bool `front`."""
    import pandas as pd

    frame = pd.DataFrame(board.rows, columns=board.columns)
    for column in INTEGER_COLUMNS:
        frame[column] = frame[column].astype("Int64")
    for column in ("val_acc", "latency_ms", "train_s"):
        frame[column] = frame[column].astype("float64")
    frame["trial"] = frame["trial"].astype("int64")
    if "front" in board.columns:
        frame["front"] = frame["front"].astype(bool)
    return frame


def _row(fact: TrialFacts, rank: int | None, *, front: bool) -> dict[str, Any]:
    return {
        "rank": rank,
        "front": front,
        "trial": fact.number,
        "state": fact.state,
        "val_acc": fact.val_acc,
        "params": fact.params,
        "flops": fact.flops,
        "latency_ms": fact.latency_ms,
        "train_s": fact.train_s,
        "epochs": fact.epochs,
        "arch": fact.arch,
        "reason": fact.reason,
    }


def sort_and_cut(frame: Leaderboard, *, sort: str | None = None, top: int | None = None) -> Leaderboard:
    """Sort by one column (better first: val_acc descending, costs ascending) and keep `top` rows.

    Takes and returns a DataFrame or a `Board`; both sort alike (stable, missing values last).
    The rank column keeps each trial's leaderboard rank, whatever the order shown.
    """
    if sort is not None and sort not in list(frame.columns):
        valid = ", ".join(frame.columns)
        close = difflib.get_close_matches(sort, list(frame.columns), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UserError(f"cannot sort the leaderboard by unknown column {sort!r} (valid columns: {valid}){hint}")
    if top is not None and top < 1:
        raise UserError(f"--top must be at least 1, but got {top}")
    if isinstance(frame, Board):
        rows = frame.rows
        if sort is not None:
            present = [row for row in rows if not _missing(row[sort])]
            # Python's sort is stable with reverse=True too: ties keep their order, as in pandas.
            present.sort(key=lambda row: row[sort], reverse=sort in DESCENDING_COLUMNS)
            rows = present + [row for row in rows if _missing(row[sort])]
        return Board(list(frame.columns), list(rows[:top] if top is not None else rows))
    if sort is not None:
        frame = frame.sort_values(sort, ascending=sort not in DESCENDING_COLUMNS, kind="stable", na_position="last")
    if top is not None:
        frame = frame.head(top)
    return frame.reset_index(drop=True)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or _is_pandas_na(value)


def _is_pandas_na(value: Any) -> bool:
    pandas = sys.modules.get("pandas")  # not loaded: no value can be pandas.NA
    return pandas is not None and value is pandas.NA


# ---- rendering the leaderboard -------------------------------------------------------------
def humanise(number: Any) -> str:
    """12345 -> '12.3K', 4_500_000 -> '4.5M', 999 -> '999'; missing -> '-'."""
    value = _number(number)
    if value is None:
        return "-"
    units = (("G", 1e9), ("M", 1e6), ("K", 1e3))
    for position, (unit, scale) in enumerate(units):
        if abs(value) >= scale:
            text = f"{value / scale:.1f}"
            if text.startswith("1000") and position > 0:  # 999_960 reads 1.0M, not 1000.0K
                unit, scale = units[position - 1]
                text = f"{value / scale:.1f}"
            return f"{text}{unit}"
    rounded = round(value)
    return str(rounded) if abs(value - rounded) < 1e-9 else f"{value:.3g}"


def _percent(value: Any) -> str:
    number = _number(value)
    return "-" if number is None else f"{number * 100:.2f}%"


def _fixed(digits: int):
    def format_value(value: Any) -> str:
        number = _number(value)
        return "-" if number is None else f"{number:.{digits}f}"

    return format_value


def _plain_text(value: Any) -> str:
    if _missing(value):
        return "-"
    return str(value)


# Display form of each column (terminal, markdown, HTML); csv and json keep raw values.
DISPLAY = {
    "val_acc": _percent,
    "params": humanise,
    "flops": humanise,
    "latency_ms": _fixed(2),
    "train_s": _fixed(1),
    "front": lambda value: "yes" if bool(value) else "",
}
HEADERS = {"rank": "#", "val_acc": "val acc", "latency_ms": "latency ms", "train_s": "train s"}
NUMERIC_COLUMNS = frozenset({"rank", "trial", "val_acc", "params", "flops", "latency_ms", "train_s", "epochs"})
WRAPPING_COLUMNS = frozenset({"arch", "reason"})
# Left out of the tables (terminal, HTML) when no row shown has a value: accuracy-only
# searches do not measure latency.
HIDDEN_WHEN_EMPTY = ("latency_ms",)


def _column_values(frame: Leaderboard) -> tuple[list[Any], list[list[Any]]]:
    """The column names and each column's raw values, of a DataFrame or a `Board`."""
    if isinstance(frame, Board):
        return list(frame.columns), [frame.column(column) for column in frame.columns]
    return list(frame.columns), [frame[column].tolist() for column in frame.columns]


def _display_columns(columns: Sequence[Any], values: Sequence[list[Any]]) -> list[list[str]]:
    return [[DISPLAY.get(column, _plain_text)(value) for value in column_values]
            for column, column_values in zip(columns, values)]


def _rows_of(cells_by_column: list[list[str]]) -> list[list[str]]:
    return [list(row) for row in zip(*cells_by_column)] if cells_by_column else []


def display_cells(frame: Leaderboard) -> list[list[str]]:
    """Every cell of the frame as the text people read (percent, 12.3K, '-' when missing)."""
    return _rows_of(_display_columns(*_column_values(frame)))


def _table_columns(frame: Leaderboard) -> tuple[list[Any], list[list[str]]]:
    """The columns a table shows, and its rows of display cells: like `display_cells`, less
    the HIDDEN_WHEN_EMPTY columns that no row has a value in."""
    columns, values = _column_values(frame)
    keep = [index for index, column in enumerate(columns)
            if not (column in HIDDEN_WHEN_EMPTY and all(_number(value) is None for value in values[index]))]
    columns = [columns[index] for index in keep]
    return columns, _rows_of(_display_columns(columns, [values[index] for index in keep]))


def frame_to_text(frame: pd.DataFrame, fmt: str) -> str:
    """The frame as csv, json (one list of records) or a markdown pipe table."""
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "json":
        return json.dumps(_records(frame), indent=2) + "\n"
    if fmt == "markdown":
        if frame.empty:
            return f"_{EMPTY_MESSAGE}_\n"
        header = "| " + " | ".join(_markdown_cell(str(column)) for column in frame.columns) + " |"
        separator = "| " + " | ".join("---:" if column in NUMERIC_COLUMNS else "---" for column in frame.columns) + " |"
        rows = ["| " + " | ".join(_markdown_cell(cell) for cell in row) + " |" for row in display_cells(frame)]
        return "\n".join([header, separator, *rows]) + "\n"
    raise UserError(f"unknown output format {fmt!r}; use one of: {', '.join(FORMATS)}")


def _markdown_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Plain-Python records: numpy numbers become int/float, missing values None."""
    records = []
    for row in frame.to_dict(orient="records"):
        records.append({key: _plain(value) for key, value in row.items()})
    return records


def _plain(value: Any) -> Any:
    import numpy as np

    if value is None or _is_pandas_na(value):
        return None
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    return value


STATE_STYLES = {"complete": "green", "pruned": "yellow", "running": "cyan"}


def _state_style(state: str) -> str:
    if state.startswith("failed") or state in ("interrupted", "stopped"):
        return "red"
    if state.startswith("duplicate") or state in ("infeasible", "over budget"):
        return "dim"
    return STATE_STYLES.get(state, "")


# Columns left out, in this order, when a table must fit a narrow terminal.
OPTIONAL_COLUMNS = ("flops", "train_s", "latency_ms", "epochs", "front")
MIN_ARCH_WIDTH = 24  # characters of the arch column worth keeping before dropping columns


def leaderboard_table(frame: Leaderboard, *, title: str = "", width: int | None = None) -> RenderableType:
    """The frame (or `Board`) as a rich Table for the terminal; the text "No finished trials
    yet." when empty.

    The latency column is left out when no row shown has a latency. With `width` (the
    console's), less important columns (flops, train s, latency, epochs) are left out until
    the arch column has room to be read.
    """
    if frame.empty:
        return Text(EMPTY_MESSAGE)
    columns, rows = _table_columns(frame)
    if width is not None:
        columns, rows = _fit_columns(columns, rows, width)
    table = Table(title=Text(title) if title else None, header_style="bold")
    for column in columns:
        # Numbers and states never wrap; long arch strings and reasons fold when space runs out.
        wraps = column in WRAPPING_COLUMNS
        table.add_column(
            HEADERS.get(column, column),
            justify="right" if column in NUMERIC_COLUMNS else "left",
            no_wrap=not wraps,
            overflow="fold" if wraps else "ellipsis",
            min_width=None if wraps else len(HEADERS.get(column, column)),
        )
    state_index = columns.index("state") if "state" in columns else -1
    for row in rows:
        cells = []
        for index, cell in enumerate(row):
            if columns[index] == "front":
                cells.append(Text("●" if cell else "", style="bold magenta"))
            elif index == state_index:
                cells.append(Text(cell, style=_state_style(cell)))
            else:
                cells.append(Text(cell))  # user strings: never read as markup
        table.add_row(*cells)
    return table


def _fit_columns(columns: list[Any], cells: list[list[str]], width: int) -> tuple[list[Any], list[list[str]]]:
    natural = {
        column: max([len(HEADERS.get(column, column))] + [len(row[index]) for row in cells])
        for index, column in enumerate(columns)
    }

    def needed(columns: list[str]) -> int:
        fixed = sum(natural[column] for column in columns if column not in WRAPPING_COLUMNS)
        wrapping = sum(min(natural[column], MIN_ARCH_WIDTH) for column in columns if column in WRAPPING_COLUMNS)
        return fixed + wrapping + 3 * len(columns) + 1  # borders and padding

    shown = list(columns)
    for column in OPTIONAL_COLUMNS:
        if needed(shown) <= width:
            break
        if column in shown:
            shown.remove(column)
    keep = [columns.index(column) for column in shown]
    return shown, [[row[index] for index in keep] for row in cells]


# ---- all runs ------------------------------------------------------------------------------
RUNS_COLUMNS = (
    "name", "data", "trials", "complete", "pruned", "skipped", "failed", "best_val_acc",
    "last_activity", "running", "note",
)


def runs_frame(runs_dir: str | Path, *, now: float | None = None) -> pd.DataFrame:
    """One row per run folder: counts of trials by outcome, best accuracy, last activity.

    complete counts duplicates, skipped counts infeasible and over-budget candidates, failed
    counts oom/nan/timeout/error/interrupted. `running` is True while a RUNNING trial's worker
    is alive (see `_worker_alive`); RUNNING trials whose worker is gone are counted in the note.
    A run that cannot be read is listed with a note.
    """
    import pandas as pd

    now = time.time() if now is None else now
    rows = []
    for name in list_run_names(runs_dir):
        run = RunDir(runs_dir, name)
        row: dict[str, Any] = {"name": name, "data": "", "note": ""}
        try:
            info = run.read_info()
            row["data"] = info.data
            study = run.load_study(info)
            facts = _study_facts(study, info, run=run, now=now)
        # A damaged or unreachable run must not hide the others: any error becomes its note.
        except Exception as error:  # noqa: BLE001 — journal, RDB and JSON errors all land here
            row["note"] = _first_line(error)
            rows.append(row)
            continue
        outcomes = [fact.outcome for fact in facts]
        trained = [fact.val_acc for fact in facts if fact.outcome in TRAINED_OUTCOMES and fact.val_acc is not None]
        moments = [moment for fact in facts for moment in (fact.started, fact.finished) if moment is not None]
        row.update(
            trials=len(facts),
            complete=sum(outcome in TRAINED_OUTCOMES for outcome in outcomes),
            pruned=outcomes.count("pruned"),
            skipped=sum(outcome in SKIPPED_OUTCOMES for outcome in outcomes),
            failed=sum(outcome in FAILED_OUTCOMES or outcome == "interrupted" for outcome in outcomes),
            best_val_acc=max(trained) if trained else None,
            last_activity=max(moments).isoformat(timespec="seconds") if moments else "",
            running="running" in outcomes,
        )
        if "stopped" in outcomes:
            row["note"] = f"{outcomes.count('stopped')} trial(s) stopped ({STOPPED_NOTE})"
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(RUNS_COLUMNS))
    for column in ("trials", "complete", "pruned", "skipped", "failed"):
        frame[column] = frame[column].astype("Int64")
    frame["best_val_acc"] = frame["best_val_acc"].astype("float64")
    frame["running"] = frame["running"].fillna(False).astype(bool)
    return frame


def runs_table(frame: pd.DataFrame, *, title: str = "") -> RenderableType:
    """The `runs_frame` as a rich Table; a short sentence when there are no runs."""
    if frame.empty:
        return Text("No runs yet; start one with `cnnsearch search`.")
    table = Table(title=Text(title) if title else None, header_style="bold")
    for column in RUNS_COLUMNS:
        numeric = column in ("trials", "complete", "pruned", "skipped", "failed", "best_val_acc")
        table.add_column(column.replace("_", " "), justify="right" if numeric else "left", overflow="fold")
    for record in frame.to_dict(orient="records"):
        cells = []
        for column in RUNS_COLUMNS:
            value = record[column]
            if column == "best_val_acc":
                cells.append(Text(_percent(value)))
            elif column == "running":
                cells.append(Text("running" if value else "", style="bold cyan"))
            elif column == "note":
                cells.append(Text("" if value is None else str(value), style="red"))
            else:
                cells.append(Text(_plain_text(value) if value is not None else ""))
        table.add_row(*cells)
    return table


def _heartbeat_age(run: RunDir, number: int, now: float) -> float | None:
    """Seconds since the worker training trial `number` last touched its heartbeat file."""
    try:
        return now - run.heartbeat_file(number).stat().st_mtime
    except OSError:
        return None


def _worker_alive(run: RunDir, trial: Any, now: float | None = None) -> bool:
    """Whether the worker of a RUNNING trial still runs: by process id when it runs on this
    machine (a SIGKILL shows at once), else by its heartbeat file (fresh: younger than 60 s).

    A worker elsewhere whose heartbeat file this run folder lacks (one using another run folder
    and a shared database) cannot be judged from here and counts as alive.
    """
    host, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
    if host == socket.gethostname() and pid.isdigit() and int(pid) > 0:
        try:
            os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            return False
        except PermissionError:  # it exists, under another user
            return True
        return True
    age = _heartbeat_age(run, trial.number, time.time() if now is None else now)
    return age is None or age < HEARTBEAT_FRESH_S


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# ---- one trial -------------------------------------------------------------------------------
def trial_detail(run: RunDir, number: int, *, study: Any = None) -> Group:
    """Everything about one trial: metrics, layer table, settings, searched values, learning curve."""
    info = run.read_info()
    study = study if study is not None else run.load_study(info)
    trial = find_trial(run, study.get_trials(deepcopy=False), number)
    attrs = trial.user_attrs
    accuracy_index = info.objective.index("accuracy") if "accuracy" in info.objective else 0
    alive = trial.state.name != "RUNNING" or _worker_alive(run, trial)
    fact = trial_facts(trial, accuracy_index=accuracy_index, epochs_budget=info.epochs, alive=alive)

    parts: list[RenderableType] = [_trial_header(fact, attrs, trial)]
    arch = _architecture(attrs)
    if arch is None:
        parts.append(Text("No architecture recorded: the trial ended before a candidate was sampled.", style="dim"))
    else:
        parts.append(_layers_table(arch, info))
        parts.append(_settings_table("training", dataclasses.asdict(arch.train)))
        parts.append(_settings_table("augmentation", dataclasses.asdict(arch.augment)))
    if trial.params:
        parts.append(_settings_table("searched values", dict(trial.params)))
    if fact.curve:
        chart = text_chart(fact.curve)
        parts.append(Text("validation accuracy by epoch", style="bold"))
        parts.append(Text(chart))
    else:
        parts.append(Text("No learning curve recorded.", style="dim"))
    return Group(*parts)


def _architecture(attrs: dict[str, Any]) -> Architecture | None:
    raw = attrs.get("arch")
    if not isinstance(raw, dict):
        return None
    try:
        from cnnsearch.spec import Architecture

        return Architecture.from_dict(raw)
    except (KeyError, TypeError, ValueError):
        return None


def _trial_header(fact: TrialFacts, attrs: dict[str, Any], trial: Any) -> RenderableType:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    seconds = fact.train_s
    if seconds is None and trial.datetime_start and trial.datetime_complete:
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
    val_acc = _percent(fact.val_acc)
    if fact.val_acc is not None and _number(attrs.get("final_val_acc")) is not None:
        val_acc += f" (final {_percent(attrs['final_val_acc'])}, best at epoch {attrs.get('best_epoch', '?')})"
    rows = [
        ("trial", str(fact.number)),
        ("outcome", fact.state),
        ("reason", fact.reason),
        ("val acc", val_acc if fact.val_acc is not None else ""),
        ("params", f"{fact.params:,} ({humanise(fact.params)})" if fact.params is not None else ""),
        ("flops", f"{fact.flops:,} ({humanise(fact.flops)})" if fact.flops is not None else ""),
        ("latency", _latency_text(fact.latency_ms, attrs) if fact.latency_ms is not None else ""),
        ("seconds", f"{seconds:.1f}" if seconds is not None else ""),
        ("epochs run", str(fact.epochs) if fact.epochs is not None else ""),
        ("images/s", _plain_text(attrs.get("images_per_sec")) if "images_per_sec" in attrs else ""),
        ("arch", fact.arch),
        ("hash", str(attrs.get("hash", ""))),
        ("seed", str(attrs.get("seed", ""))),
        ("worker", str(attrs.get("worker", ""))),
        ("device", str(attrs.get("device", ""))),
        ("started", trial.datetime_start.isoformat(timespec="seconds") if trial.datetime_start else ""),
    ]
    for key, value in rows:
        if value:
            grid.add_row(Text(key), Text(value, style=_state_style(value) if key == "outcome" else ""))
    return grid


def _latency_text(latency_ms: float, attrs: dict[str, Any]) -> str:
    arch = attrs.get("arch")
    batch = _integer(arch.get("train", {}).get("batch_size")) if isinstance(arch, dict) else None
    if batch is None:
        return f"{latency_ms:.3f} ms per batch"
    return f"{latency_ms:.3f} ms per batch of {min(batch, LATENCY_BATCH_MAX)} images"


def _layers_table(arch: Architecture, info: RunInfo) -> RenderableType:
    shape = tuple(info.input_shape)
    if len(shape) != 3 or not info.class_names:
        return Text("No layer table: run.json has no input shape or class names.", style="dim")
    try:
        from cnnsearch.spec import layer_table

        rows = layer_table(arch, shape, len(info.class_names))
    except InfeasibleArchitecture as error:
        size = "x".join(str(side) for side in shape)
        return Text(f"No layer table: the candidate cannot be built for {size} inputs ({error}).", style="yellow")
    table = Table(title=Text("layers"), header_style="bold", show_footer=True)
    table.add_column("layer", footer=Text("total"))
    table.add_column("description")
    table.add_column("output shape", justify="right")
    table.add_column("params", justify="right", footer=Text(f"{sum(row.params for row in rows):,}"))
    for row in rows:
        table.add_row(
            Text(row.name),
            Text(row.description),
            Text("x".join(str(side) for side in row.output_shape)),
            Text(f"{row.params:,}"),
        )
    return table


def _settings_table(title: str, settings: dict[str, Any]) -> RenderableType:
    table = Table(title=Text(title), header_style="bold", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key, value in settings.items():
        table.add_row(Text(str(key)), Text(_setting_text(value)))
    return table


def _setting_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(item) for item in value) or "none"
    return str(value)


def text_chart(values: Sequence[float], *, width: int = 40, height: int = 8) -> str:
    """A line chart in plain text: y-axis labels, `*` on each value, `.` between them.

    Missing values (NaN) leave a gap. The x axis runs from the first value (1) to the last.
    """
    if width < 2 or height < 2:
        raise ValueError(f"width >= 2 and height >= 2 must hold, but got width={width}, height={height}")
    points = [_number_or_nan(value) for value in values]
    finite = [value for value in points if not math.isnan(value)]
    if not finite:
        return "(no values)"
    low, high = min(finite), max(finite)
    if high == low:  # a flat line sits in the middle
        pad = abs(high) * 0.05 or 0.5
        low, high = low - pad, high + pad
    count = len(points)
    grid = [[" "] * width for _ in range(height)]

    def row_of(value: float) -> int:
        return round((high - value) / (high - low) * (height - 1))

    marked = {round(index * (width - 1) / (count - 1)) for index in range(count)} if count > 1 else {0}
    for column in range(width):
        if count == 1:
            value = points[0] if column == 0 else math.nan
        else:
            position = column * (count - 1) / (width - 1)
            left = math.floor(position)
            right = min(left + 1, count - 1)
            share = position - left
            value = points[left] * (1 - share) + points[right] * share if share else points[left]
        if math.isnan(value):
            continue
        grid[row_of(value)][column] = "*" if column in marked else "."
    labels = {0: high, height - 1: low}
    if height >= 5:
        labels[(height - 1) // 2] = high - (high - low) * ((height - 1) // 2) / (height - 1)
    texts = {row: f"{value:.4g}" for row, value in labels.items()}
    label_width = max(len(text) for text in texts.values())
    lines = [f"{texts.get(row, ''):>{label_width}} |{''.join(grid[row]).rstrip()}" for row in range(height)]
    lines.append(" " * label_width + " +" + "-" * width)
    last = str(count)
    lines.append(" " * (label_width + 2) + "1" + last.rjust(width - 1) if count > 1 else " " * (label_width + 2) + "1")
    return "\n".join(lines)


def _number_or_nan(value: Any) -> float:
    number = _number(value)
    return math.nan if number is None else number


# ---- watch -----------------------------------------------------------------------------------
def watch_view(run: RunDir, *, study: Any = None, now: float | None = None, width: int | None = None) -> RenderableType:
    """The live view: a summary line, the top 10 and the RUNNING trials with their progress.

    `width` (the console's) lets the leaderboard leave out minor columns on narrow terminals.
    """
    now = time.time() if now is None else now
    info = run.read_info()
    study = study if study is not None else run.load_study(info)
    facts = _study_facts(study, info, run=run, now=now)
    frame = _board(facts, _objectives(study, info), include_all=False)
    outcomes = [fact.outcome for fact in facts]
    running = [fact for fact in facts if fact.outcome == "running"]
    stamp = datetime.datetime.fromtimestamp(now).strftime("%H:%M:%S")
    stopped = f", {outcomes.count('stopped')} stopped ({STOPPED_NOTE})" if "stopped" in outcomes else ""
    summary = Text(
        f"{run.name}: {len(facts)} trials, {sum(o in TRAINED_OUTCOMES for o in outcomes)} complete, "
        f"{outcomes.count('pruned')} pruned, {len(running)} running{stopped} (updated {stamp})"
    )
    board = leaderboard_table(sort_and_cut(frame, top=WATCH_TOP), title=f"top {WATCH_TOP}", width=width)
    if not running:
        return Group(summary, board, Text("No trials running.", style="dim"))

    trials = {trial.number: trial for trial in study.get_trials(deepcopy=False)}
    table = Table(title=Text("running"), header_style="bold")
    for header, justify in (
        ("trial", "right"), ("worker", "left"), ("device", "left"), ("epoch", "right"),
        ("val acc", "right"), ("best", "right"), ("running for", "right"), ("heartbeat", "right"),
    ):
        # Only the worker name may be shortened on a narrow terminal.
        table.add_column(header, justify=justify, no_wrap=True, min_width=None if header == "worker" else len(header))
    for fact in running:
        attrs = trials[fact.number].user_attrs
        total = _arch_epochs(attrs) or info.epochs
        current = attrs.get("current_epoch", len(fact.curve))
        finite = [value for value in fact.curve if not math.isnan(value)]
        elapsed = (datetime.datetime.fromtimestamp(now) - fact.started).total_seconds() if fact.started else None
        age = _heartbeat_age(run, fact.number, now)
        if age is None:
            beat = Text("none", style="dim")
        elif age < HEARTBEAT_FRESH_S:
            beat = Text(f"{age:.0f} s ago")
        else:
            beat = Text(f"stale ({_duration(age)})", style="red")
        table.add_row(
            Text(str(fact.number)),
            Text(str(attrs.get("worker", ""))),
            Text(str(attrs.get("device", ""))),
            Text(f"{current} / {total}" if total else str(current)),
            Text(_percent(finite[-1]) if finite else "-"),
            Text(_percent(max(finite)) if finite else "-"),
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


# ---- the HTML report -------------------------------------------------------------------------
def write_report(run: RunDir, *, study: Any = None) -> Path:
    """Write `runs/<name>/report.html` (one self-contained file) and its plots as PNGs in `report/`.

    Returns the path of the HTML file. A run without finished trials still gets a report that
    says so.
    """
    info = run.read_info()
    study = study if study is not None else run.load_study(info)
    facts = _study_facts(study, info, run=run)
    objectives = _objectives(study, info)
    frame = _board(facts, objectives, include_all=False)
    plots_dir = run.path / "report"
    plots_dir.mkdir(parents=True, exist_ok=True)
    for name in PLOT_NAMES:  # a plot left from an earlier report must not pass for this one's
        (plots_dir / f"{name}.png").unlink(missing_ok=True)

    sections = [_settings_section(run, info), _models_section(run)]
    if frame.empty:
        sections.append(f"<h2>Leaderboard</h2><p class='empty'>{html.escape(EMPTY_MESSAGE)}</p>")
        sections.append(_time_section(facts, None))
    else:
        images = _Images(plots_dir)
        sections.append(_summary_section(facts, frame))
        sections.append("<h2>Leaderboard</h2>" + _html_table(sort_and_cut(frame, top=REPORT_TOP)))
        sections.append(_progress_section(facts, images))
        sections.append(_time_section(facts, images))
        sections.append(_cost_section(facts, images))
        sections.append(_importance_section(study, info, facts, images))
        sections.append(_curves_section(frame, facts, images))
        sections.append(_unfinished_section(facts))
    page = _page(f"cnnsearch report: {run.name}", "\n".join(section for section in sections if section))
    path = run.path / "report.html"
    write_atomic(path, page)
    return path


class _Images:
    """Renders figures to PNG once: written to the report folder and embedded as data URIs."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def embed(self, figure: Any, name: str, alt: str) -> str:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
        data = buffer.getvalue()
        (self.folder / f"{name}.png").write_bytes(data)
        encoded = base64.b64encode(data).decode("ascii")
        return f"<img src='data:image/png;base64,{encoded}' alt='{html.escape(alt)}'>"


def _figure(columns: int = 1, *, height: float = 3.6) -> tuple[Any, Any]:
    # The object-oriented API, not pyplot: no global backend or figure registry is touched,
    # and PNGs are drawn by the Agg canvas whatever backend the caller's process uses.
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.2 * columns, height), layout="constrained")
    axes = figure.subplots(1, columns, squeeze=False)[0]
    for axis in axes:
        axis.grid(True, alpha=0.3)
    return figure, axes


def _settings_section(run: RunDir, info: RunInfo) -> str:
    split = ", ".join(
        f"{key} {value:,}" if isinstance(value, int) else f"{key} {value}" for key, value in info.split_sizes.items()
    )
    settings: list[tuple[str, Any]] = [
        ("run", info.name),
        ("data", info.data),
        ("data folder", info.data_dir),
        ("input shape (C, H, W)", " x ".join(str(side) for side in info.input_shape)),
        ("classes", f"{len(info.class_names)}: {', '.join(info.class_names[:20])}{' …' if len(info.class_names) > 20 else ''}"),
        ("image size", info.image_size),
        ("subset", info.subset),
        ("split", split),
        ("validation fraction, split seed", f"{info.val_fraction:g}, {info.split_seed}"),
        ("objective", ", ".join(info.objective)),
        ("epochs per trial", info.epochs if info.epochs is not None else "as in the space"),
        ("trial timeout", f"{info.trial_timeout:g} s" if info.trial_timeout else "none"),
        ("sampler", info.sampler),
        ("pruner", info.pruner),
        ("seed", info.seed),
        ("storage", describe_storage(info.storage)),
        ("command", describe_storage(info.command)),
        ("device", info.device),
        ("created", info.created),
        ("versions", ", ".join(f"{key} {value}" for key, value in sorted(info.versions.items()))),
    ]
    space_text = ""
    if run.space_file.is_file():
        text = run.space_file.read_text(errors="replace")
        try:
            constraints = tomllib.loads(text).get("constraints", {})
        except tomllib.TOMLDecodeError:
            constraints = {}
        for key, value in constraints.items():
            settings.append((f"budget: {key}", f"{value:,}" if isinstance(value, int) else value))
        space_text = f"<details><summary>space.toml</summary><pre>{html.escape(text)}</pre></details>"
    rows = "".join(
        f"<tr><th>{html.escape(key)}</th><td>{html.escape(str(value))}</td></tr>"
        for key, value in settings
        if value not in (None, "")
    )
    return f"<h2>Run</h2><table class='kv'>{rows}</table>{space_text}"


def _models_section(run: RunDir) -> str:
    items = []
    exports_file = run.path / "exports.json"  # export appends one entry per exported model
    try:
        exports = json.loads(exports_file.read_text()) if exports_file.is_file() else []
    except (OSError, json.JSONDecodeError):
        exports = []
    for entry in exports if isinstance(exports, list) else []:
        if not isinstance(entry, dict):
            continue
        accuracy = _number(entry.get("test_accuracy"))
        text = f"test accuracy <b>{_percent(accuracy)}</b>" if accuracy is not None else "no test accuracy recorded"
        size = f" on {entry['test_size']} held-out images, evaluated once" if entry.get("test_size") else ""
        items.append(
            f"<li>{html.escape(str(entry.get('out', '')))} (trial {html.escape(str(entry.get('trial')))}, "
            f"<code>{html.escape(str(entry.get('compact', '')))}</code>): {text}{size}</li>"
        )
    for path in sorted(run.path.rglob("model.json")):
        where = html.escape(str(path.relative_to(run.path)))
        try:
            model = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            items.append(f"<li>{where}: unreadable ({html.escape(_first_line(error))})</li>")
            continue
        accuracy = _number(model.get("test_accuracy")) if isinstance(model, dict) else None
        trial = model.get("trial") if isinstance(model, dict) else None
        text = f"test accuracy <b>{_percent(accuracy)}</b>" if accuracy is not None else "no test accuracy recorded"
        source = f" (trial {html.escape(str(trial))})" if trial is not None else ""
        items.append(f"<li>{where}{source}: {text}</li>")
    if not items:
        return ""
    return "<h2>Exported model</h2><ul>" + "".join(items) + "</ul>"


def _summary_section(facts: Sequence[TrialFacts], frame: Board) -> str:
    best = frame.rows[0]
    counts = _outcome_counts(facts)
    listed = ", ".join(f"{count} {outcome.replace('_', ' ')}" for outcome, count in counts.items())
    return (
        "<h2>Summary</h2>"
        f"<p>{len(facts)} trials: {html.escape(listed)}.</p>"
        f"<p>Best: trial {int(best['trial'])}, validation accuracy <b>{_percent(best['val_acc'])}</b>, "
        f"{humanise(best['params'])} params, <code>{html.escape(str(best['arch']))}</code></p>"
    )


def _outcome_counts(facts: Sequence[TrialFacts]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for fact in facts:
        counts[fact.outcome] = counts.get(fact.outcome, 0) + 1
    order = {outcome: index for index, outcome in enumerate(TIME_OUTCOMES)}
    return dict(sorted(counts.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))


def _html_table(frame: Leaderboard) -> str:
    columns, rows = _table_columns(frame)
    headers = "".join(f"<th>{html.escape(HEADERS.get(str(column), str(column)))}</th>" for column in columns)
    numeric = [column in NUMERIC_COLUMNS for column in columns]
    body = []
    for row in rows:
        cells = "".join(
            f"<td class='num'>{html.escape(cell)}</td>" if is_numeric else f"<td>{html.escape(cell)}</td>"
            for cell, is_numeric in zip(row, numeric)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{headers}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _progress_section(facts: Sequence[TrialFacts], images: _Images) -> str:
    import numpy as np

    trained = [fact for fact in facts if fact.outcome in TRAINED_OUTCOMES and fact.val_acc is not None]
    if not trained:
        return ""
    starts = [fact.started for fact in facts if fact.started is not None]
    origin = min(starts) if starts else None
    figure, (by_time, by_number) = _figure(2)

    timed = sorted((fact for fact in trained if fact.finished is not None and origin is not None), key=lambda fact: fact.finished)
    if timed:
        elapsed = np.array([(fact.finished - origin).total_seconds() for fact in timed])
        unit, scale = ("hours", 3600.0) if elapsed.max() > 3 * 3600 else ("minutes", 60.0)
        best = np.maximum.accumulate(np.array([fact.val_acc for fact in timed]))
        by_time.step(elapsed / scale, best * 100, where="post", color="tab:blue")
        by_time.scatter(elapsed / scale, [fact.val_acc * 100 for fact in timed], s=6, color="0.6", alpha=0.6)
        by_time.set_xlabel(f"wall clock since the first trial started ({unit})")
    by_time.set_ylabel("best validation accuracy (%)")
    by_time.set_title("best so far, over time")

    ordered = sorted(trained, key=lambda fact: fact.number)
    numbers = np.array([fact.number for fact in ordered])
    accuracies = np.array([fact.val_acc for fact in ordered])
    by_number.scatter(numbers, accuracies * 100, s=6, color="0.6", alpha=0.6, label="trial")
    by_number.step(numbers, np.maximum.accumulate(accuracies) * 100, where="post", color="tab:blue", label="best so far")
    by_number.set_xlabel("trial number")
    by_number.set_title("best so far, by trial")
    by_number.legend(loc="lower right", fontsize="small")
    _clip_accuracy_axis([by_time, by_number], accuracies)
    return (
        "<h2>Best validation accuracy</h2>"
        + images.embed(figure, "best_so_far", "best validation accuracy so far")
        + "<p class='note'>Counts the trials that trained to the end (complete ones and duplicates) only; "
        "pruned trials stopped early, on a shorter schedule, so their accuracies are left out.</p>"
    )


def _clip_accuracy_axis(axes: Sequence[Any], accuracies: np.ndarray) -> None:
    """Zoom on the interesting band: a few bad trials should not squash the best ones."""
    import numpy as np

    if len(accuracies) == 0:
        return
    low = max(float(np.percentile(accuracies, 5)) * 100 - 2, 0.0)
    high = min(float(accuracies.max()) * 100 + 1, 100.5)
    if high > low:
        for axis in axes:
            axis.set_ylim(low, high)


def _trial_seconds(fact: TrialFacts) -> float:
    if fact.train_s is not None:
        return fact.train_s
    if fact.started is not None and fact.finished is not None:
        return (fact.finished - fact.started).total_seconds()
    return 0.0


def _time_section(facts: Sequence[TrialFacts], images: _Images | None) -> str:
    if not facts:
        return ""
    seconds: dict[str, float] = {}
    counts = _outcome_counts(facts)
    for fact in facts:
        seconds[fact.outcome] = seconds.get(fact.outcome, 0.0) + _trial_seconds(fact)
    total = sum(seconds.values()) or 1.0
    by_number = {fact.number: fact for fact in facts}
    saved = 0.0  # what the duplicates would have cost: their originals' training time
    for fact in facts:
        if fact.outcome == "duplicate":
            original = _duplicate_of(fact)
            if original is not None and original in by_number:
                saved += _trial_seconds(by_number[original])

    labels = {"duplicate": "duplicates skipped", "over_budget": "over budget"}
    rows = []
    for outcome, count in counts.items():
        label = labels.get(outcome, outcome)
        note = f" (saved about {saved:,.0f} s)" if outcome == "duplicate" and saved else ""
        rows.append(
            f"<tr><td>{html.escape(label)}{html.escape(note)}</td><td class='num'>{count}</td>"
            f"<td class='num'>{seconds.get(outcome, 0.0):,.1f}</td>"
            f"<td class='num'>{100 * seconds.get(outcome, 0.0) / total:.1f}%</td></tr>"
        )
    table = (
        "<table><thead><tr><th>outcome</th><th>trials</th><th>seconds</th><th>share</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        "<p class='note'>Seconds are training time; for trials never trained, the time from start to end.</p>"
    )
    image = ""
    if images is not None:
        figure, (axis,) = _figure(1, height=0.35 * len(counts) + 1.2)
        names = [labels.get(outcome, outcome) for outcome in counts]
        colours = [_outcome_colour(outcome) for outcome in counts]
        axis.barh(names, [seconds.get(outcome, 0.0) for outcome in counts], color=colours)
        axis.invert_yaxis()
        axis.set_xlabel("seconds")
        axis.set_title("where the time went")
        image = images.embed(figure, "time", "seconds spent per outcome")
    return "<h2>Where the time went</h2>" + image + table


def _duplicate_of(fact: TrialFacts) -> int | None:
    prefix = "duplicate of #"
    return int(fact.state[len(prefix):]) if fact.state.startswith(prefix) else None


def _outcome_colour(outcome: str) -> str:
    if outcome == "complete":
        return "tab:green"
    if outcome == "pruned":
        return "tab:orange"
    if outcome in FAILED_OUTCOMES or outcome in ("interrupted", "stopped"):
        return "tab:red"
    return "0.6"


def _cost_section(facts: Sequence[TrialFacts], images: _Images) -> str:
    import numpy as np

    # Duplicates repeat their original's point; plotting them twice adds nothing.
    trained = [fact for fact in facts if fact.outcome == "complete" and fact.val_acc is not None]
    panels = [
        ("params", "parameters", True),
        ("latency_ms", f"latency of one batch of min(batch size, {LATENCY_BATCH_MAX}) images (ms)", False),
    ]
    panels = [panel for panel in panels if any(getattr(fact, panel[0]) is not None for fact in trained)]
    if not panels:
        return ""
    figure, axes = _figure(len(panels))
    listed = []
    for axis, (column, label, log_x) in zip(axes, panels):
        points = [fact for fact in trained if getattr(fact, column) is not None]
        cost = np.array([float(getattr(fact, column)) for fact in points])
        accuracy = np.array([fact.val_acc for fact in points])
        front = pareto_ranks(np.column_stack([accuracy, cost]), [True, False]) == 1
        axis.scatter(cost, accuracy * 100, s=8, color="0.6", alpha=0.6, label="trial")
        order = np.argsort(cost[front])
        axis.step(cost[front][order], accuracy[front][order] * 100, where="post", color="tab:red")
        axis.scatter(cost[front], accuracy[front] * 100, s=22, color="tab:red", label="Pareto front", zorder=3)
        if cost.min() > 0 and (log_x or cost.max() / cost.min() > 30):  # latency spans decades too
            _log_x_axis(axis, float(cost.min()), float(cost.max()))
        axis.set_xlabel(label)
        axis.set_ylabel("validation accuracy (%)")
        axis.legend(loc="lower right", fontsize="small")
        _clip_accuracy_axis([axis], accuracy)
        members = sorted((points[index] for index in np.flatnonzero(front)), key=lambda fact: getattr(fact, column))
        listed.append((column, members))
    text = "".join(
        f"<p>Front on accuracy and {html.escape(column)}: "
        + ", ".join(f"#{fact.number} ({_percent(fact.val_acc)}, {_cost_text(column, getattr(fact, column))})" for fact in members)
        + "</p>"
        for column, members in listed
    )
    return (
        "<h2>Accuracy against cost</h2>"
        + images.embed(figure, "accuracy_vs_cost", "validation accuracy against " + " and ".join(
            "latency" if column == "latency_ms" else column for column, _ in listed))
        + "<p class='note'>The Pareto front: trials no other trial beats on both accuracy and cost.</p>"
        + text
    )


def _log_ticks(low: float, high: float, *, most: int = 6) -> list[float]:
    """Round values (1, 2, 5 x 10^k, sparser when they crowd) in [low, high] for a log axis.

    At most `most` ticks; `low` and `high` themselves when no round value lies between them.
    """
    if not 0 < low <= high:
        raise ValueError(f"0 < low <= high must hold, but got low={low}, high={high}")
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    for mantissas in ((1, 2, 5), (1, 3), (1,)):
        ticks = [m * 10.0**k for k in decades for m in mantissas if low <= m * 10.0**k <= high]
        if len(ticks) <= most:
            return ticks if len(ticks) >= 2 else sorted({low, *ticks, high})
    return ticks[:: math.ceil(len(ticks) / most)]  # many decades: every n-th power of ten


def _tick_label(value: float, _position: Any = None) -> str:
    return re.sub(r"\.0(?=[KMG]$)", "", humanise(value))  # "20K", not "20.0K"


def _log_x_axis(axis: Any, low: float, high: float) -> None:
    """A log x axis labelled at a few round values only: matplotlib's own labels on minor ticks
    overlap when the data span less than a few decades."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    axis.set_xscale("log")
    axis.xaxis.set_major_locator(FixedLocator(_log_ticks(low, high)))
    axis.xaxis.set_major_formatter(FuncFormatter(_tick_label))
    axis.xaxis.set_minor_formatter(NullFormatter())


def _cost_text(column: str, value: Any) -> str:
    return f"{value:.2f} ms" if column == "latency_ms" else f"{humanise(value)} {column}"


def _importance_section(study: Any, info: RunInfo, facts: Sequence[TrialFacts], images: _Images) -> str:
    importances, problem = param_importances(study, info, facts)
    if problem:
        return f"<h2>Hyperparameter importance</h2><p class='empty'>{html.escape(problem)}</p>"
    names = list(importances)[::-1]
    figure, (axis,) = _figure(1, height=0.3 * len(names) + 1.2)
    axis.barh(names, [importances[name] for name in names], color="tab:blue")
    axis.set_xlabel("importance for validation accuracy (share)")
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td class='num'>{value:.3f}</td></tr>" for name, value in importances.items()
    )
    return (
        "<h2>Hyperparameter importance</h2>"
        + images.embed(figure, "importance", "hyperparameter importances")
        + f"<table><thead><tr><th>parameter</th><th>importance</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def param_importances(study: Any, info: RunInfo, facts: Sequence[TrialFacts] | None = None) -> tuple[dict[str, float], str]:
    """Optuna's importances of the searched values for validation accuracy, or ({}, why not)."""
    import optuna

    facts = facts if facts is not None else _study_facts(study, info)
    usable = [fact for fact in facts if fact.outcome in TRAINED_OUTCOMES and fact.values is not None]
    not_enough = "Not enough trials to estimate importances (it needs at least 2 complete trials with searched values)."
    if len(usable) < 2:
        return {}, not_enough
    accuracy_index = info.objective.index("accuracy") if "accuracy" in info.objective else 0
    target = (lambda trial: trial.values[accuracy_index]) if len(study.directions) > 1 else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            importances = optuna.importance.get_param_importances(study, target=target)
        except (ValueError, RuntimeError, ZeroDivisionError) as error:
            return {}, f"{not_enough[:-1]}: {_first_line(error)}."
    if not importances or any("too small" in str(warning.message) for warning in caught):
        return {}, not_enough
    return dict(importances), ""


def _curves_section(frame: Board, facts: Sequence[TrialFacts], images: _Images) -> str:
    import numpy as np

    by_number = {fact.number: fact for fact in facts}
    top = [
        by_number[number]
        for number in frame.column("trial")
        if by_number[number].outcome == "complete" and by_number[number].curve
    ][:CURVES_TOP]
    pruned = [fact for fact in facts if fact.outcome == "pruned" and fact.curve]
    if not top and not pruned:
        return ""
    from matplotlib.collections import LineCollection

    figure, (axis,) = _figure(1, height=4.0)
    if pruned:
        segments = [np.column_stack([np.arange(1, len(fact.curve) + 1), np.array(fact.curve) * 100]) for fact in pruned]
        axis.add_collection(LineCollection(segments, colors="0.55", alpha=0.25, linewidths=0.8))
        axis.scatter(
            [len(fact.curve) for fact in pruned],
            [fact.curve[-1] * 100 for fact in pruned],
            marker="x", s=14, color="0.45", alpha=0.5, label=f"pruned ({len(pruned)}), x where stopped",
        )
    for fact in top:
        epochs = np.arange(1, len(fact.curve) + 1)
        axis.plot(epochs, np.array(fact.curve) * 100, marker="o", markersize=3, linewidth=1.6,
                  label=f"#{fact.number} {_percent(fact.val_acc)}")
    axis.autoscale_view()
    axis.set_xlabel("epoch")
    axis.set_ylabel("validation accuracy (%)")
    axis.set_title(f"learning curves: top {len(top)} and pruned trials")
    axis.legend(loc="lower right", fontsize="small")
    return "<h2>Learning curves</h2>" + images.embed(figure, "learning_curves", "learning curves")


def _unfinished_section(facts: Sequence[TrialFacts]) -> str:
    rows = [fact for fact in facts if not fact.ranked and fact.outcome != "running"]
    if not rows:
        return ""
    shown = rows[-50:]
    body = "".join(
        f"<tr><td class='num'>{fact.number}</td><td>{html.escape(fact.state)}</td><td>{html.escape(fact.reason)}</td></tr>"
        for fact in shown
    )
    more = f"<p class='note'>The last {len(shown)} of {len(rows)}.</p>" if len(rows) > len(shown) else ""
    return (
        "<h2>Trials that were not ranked</h2>"
        f"<table><thead><tr><th>trial</th><th>state</th><th>reason</th></tr></thead><tbody>{body}</tbody></table>{more}"
    )


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1150px;
       padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
thead th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.kv th { background: #f8f8f8; font-weight: 600; white-space: nowrap; }
img { max-width: 100%; display: block; margin: .6em 0; }
code, pre { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .9em; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; }
p.note { color: #666; font-size: .85em; } p.empty { font-style: italic; }
"""


def _page(title: str, body: str) -> str:
    generated = datetime.datetime.now().isoformat(timespec="seconds")
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n<p class='note'>Generated {generated}.</p>\n{body}\n</body>\n</html>\n"
    )
