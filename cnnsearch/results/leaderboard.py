"""Owns the leaderboard: one row per trial, best first, as plain rows (`Board`) or a DataFrame,
Pareto ranks for multi-objective runs, and sorting and cutting it.

pandas and numpy are imported inside the functions that need them: the terminal table needs
neither (pandas alone was 0.15-0.2 s of `cnnsearch leaderboard`).
"""

from __future__ import annotations

import difflib
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from cnnsearch.errors import UserError
from cnnsearch.run.folder import RunDir, RunInfo

if TYPE_CHECKING:  # imported where used: `cnnsearch leaderboard` draws its table without them
    import numpy as np
    import pandas as pd

from cnnsearch.outcomes import RANKED_NOTES, SHOWN_BY_DEFAULT, STOPPED_BY_TIMEOUT, rank_key
from cnnsearch.results.facts import TRAINED_TO_THE_END, TrialFacts, study_facts
from cnnsearch.results.noise import PAIRED_TIE_RULE, TIE_RULE, half_width, interval_text, tied_outcomes

EMPTY_MESSAGE = "No finished trials yet."


COLUMNS = (
    "rank",
    "trial",
    "state",
    "val_acc",
    "val_ci",  # half-width of val_acc's 95% interval (fraction), from the validation set's size
    "tied",  # within the noise of the best accuracy (see results/noise.py); None where not a candidate
    "params",
    "flops",
    "latency_ms",
    "train_s",
    "epochs",
    "arch",
    "training",  # optimiser, learning rate, weight decay, batch, label smoothing | augmentation
)


INTEGER_COLUMNS = ("rank", "params", "flops", "epochs")  # nullable Int64: missing stays missing


# Sorting direction per column: better first. Everything else sorts ascending.
DESCENDING_COLUMNS = frozenset({"val_acc", "front", "tied"})


# Objective name in run.json -> (leaderboard column, maximise?).
OBJECTIVE_COLUMNS = {
    "accuracy": ("val_acc", True),
    "params": ("params", False),
    "flops": ("flops", False),
    "latency": ("latency_ms", False),
    "latency_ms": ("latency_ms", False),
}


@dataclass
class Board:
    """The leaderboard as plain rows, best first: what `leaderboard_frame` holds, without pandas.

    `columns` are the frame's columns, in order; each row is a dict holding at least those keys,
    with None where a value is missing. The terminal table, the watch view and the HTML report
    render a Board; `leaderboard_frame` turns one into a DataFrame for csv / json / markdown.
    """

    columns: list[str]
    rows: list[dict[str, Any]]
    val_size: int | None = None  # images in the validation split: the width of every interval

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
    facts = study_facts(study, info, run=run)
    return make_board(facts, run_objectives(study, info), include_all=include_all, val_size=validation_size(info))


def validation_size(info: RunInfo) -> int | None:
    """How many images the run validates on (run.json's split sizes), or None when unrecorded."""
    size = info.split_sizes.get("val") if isinstance(info.split_sizes, dict) else None
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None


def leaderboard_frame(run: RunDir, *, include_all: bool = False, study: Any = None) -> pd.DataFrame:
    """One row per trial, best first.

    Columns: rank, trial, state, val_acc (fraction), val_ci (half-width of its 95% interval),
    tied (within the noise of the best accuracy), params, flops, latency_ms, train_s, epochs, arch,
    training; `front` (after rank) for multi-objective runs; `reason` with `include_all`.
    Default rows are the trained trials (complete and duplicate), then those the trial timeout
    stopped after at least one epoch (state "timeout", ranked by the epochs they ran);
    `include_all` adds the pruned ones with a val_acc (ranked last) and every other trial,
    unranked, after them.
    """
    return board_frame(leaderboard_rows(run, include_all=include_all, study=study))


@dataclass(frozen=True)
class _Objective:
    name: str
    column: str | None  # leaderboard column, or None: read Optuna's value at `index`
    index: int
    maximize: bool


def run_objectives(study: Any, info: RunInfo) -> list[_Objective]:
    """The run's objectives when it has several; empty for single-objective runs."""
    directions = list(study.directions)
    if len(directions) < 2:
        return []
    names = (
        info.objective if len(info.objective) == len(directions) else [f"objective{i}" for i in range(len(directions))]
    )
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


def _tier(outcome: str) -> int:
    """Trained trials first, then those the trial timeout stopped, then pruned ones."""
    return 0 if outcome in TRAINED_TO_THE_END else 1 if outcome in STOPPED_BY_TIMEOUT else 2


def make_board(
    facts: Sequence[TrialFacts], objectives: Sequence[_Objective], *, include_all: bool, val_size: int | None = None
) -> Board:
    """The leaderboard of `facts`; `val_size` (validation images) gives each accuracy its interval
    and marks the candidates tied with the best."""
    # A timed-out trial's epochs are real (export may choose it): shown by default, after the
    # trained ones. Pruned trials stopped early on a shorter schedule: shown with --all, last.
    ranked = [fact for fact in facts if fact.ranked and (include_all or fact.outcome in SHOWN_BY_DEFAULT)]
    pareto = [math.inf] * len(ranked)
    if objectives:
        trained = [index for index, fact in enumerate(ranked) if fact.outcome in TRAINED_TO_THE_END]
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
            _tier(ranked[i].outcome),
            *rank_key(ranked[i].val_acc or 0.0, ranked[i].params, ranked[i].number),  # ranked facts all have one
        ),
    )
    rows = []
    for position, index in enumerate(order, start=1):
        rows.append(_row(ranked[index], position, front=bool(pareto[index] == 1)))
    if include_all:
        rows.extend(_row(fact, None, front=False) for fact in facts if not fact.ranked)
    _mark_ties(rows, val_size)

    columns = list(COLUMNS)
    if objectives:
        columns.insert(1, "front")
    if include_all:
        columns.append("reason")
    return Board(columns, rows, val_size=val_size)


def _mark_ties(rows: list[dict[str, Any]], val_size: int | None) -> None:
    """Fill `val_ci` and `tied`: the candidates (rows export may choose) within the noise of the
    best accuracy among those trained to the end (of all candidates when none was)."""
    for row in rows:
        row["val_ci"] = half_width(row["val_acc"], val_size) if val_size and row["val_acc"] is not None else None
        row["tied"] = None
    candidates = [row for row in rows if row["rank"] is not None and row["outcome"] in SHOWN_BY_DEFAULT]
    if not val_size or not candidates:
        return
    best = leader(rows)
    assert best is not None  # there are candidates
    for row in candidates:
        pair = (best["val_acc"], best["val_correct"]), (row["val_acc"], row["val_correct"])
        row["tied"], row["tie_paired"] = tied_outcomes(*pair, val_size)


def leader(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The row every tie is measured against: the best accuracy trained to the end (else of any
    candidate), fewer params and then the earlier trial on equal accuracy; None without candidates."""
    candidates = [row for row in rows if row["rank"] is not None and row["outcome"] in SHOWN_BY_DEFAULT]
    trained = [row for row in candidates if row["outcome"] in TRAINED_TO_THE_END] or candidates
    if not trained:
        return None
    return min(trained, key=lambda row: rank_key(row["val_acc"], row["params"], row["trial"]))


def board_notes(board: Board) -> list[str]:
    """Why the rows that did not run their whole schedule are on the board, one line per kind."""
    shown = {row["state"] for row in board.rows if row.get("rank") is not None}
    return [note for state, note in RANKED_NOTES.items() if state in shown]


def tie_note(board: Board) -> str | None:
    """One line on the ties of the whole board: how many, with whom, by which rule; None
    when the validation size is unknown or nothing is ranked."""
    best = leader(board.rows)
    if board.val_size is None or best is None:
        return None
    count = sum(1 for row in board.rows if row.get("tied")) - 1  # the leader is tied with itself
    others = "no other trial" if count == 0 else "1 other trial" if count == 1 else f"{count} other trials"
    paired = {row["tie_paired"] for row in board.rows if row.get("tied") is not None and "tie_paired" in row}
    rule = (
        PAIRED_TIE_RULE
        if paired == {True}
        else TIE_RULE
        if paired <= {False}
        else f"{PAIRED_TIE_RULE} (unpaired for trials without per-image outcomes)"
    )
    return (
        f"≈ tied: {others} within the noise of the best, trial {best['trial']} "
        f"({interval_text(best['val_acc'], board.val_size)}): {rule}, "
        f"n = {board.val_size:,} validation images; ± is the 95% interval"
    )


def board_frame(board: Board) -> pd.DataFrame:
    """The Board as a DataFrame: nullable Int64 counts, float64 measures, bool `front`."""
    import pandas as pd

    frame = pd.DataFrame(board.rows, columns=board.columns)
    for column in INTEGER_COLUMNS:
        frame[column] = frame[column].astype("Int64")
    for column in ("val_acc", "val_ci", "latency_ms", "train_s"):
        frame[column] = frame[column].astype("float64")
    frame["tied"] = frame["tied"].astype("boolean")  # nullable: None where the row is not a candidate
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
        "val_ci": None,  # _mark_ties
        "tied": None,
        "params": fact.params,
        "flops": fact.flops,
        "latency_ms": fact.latency_ms,
        "train_s": fact.train_s,
        "epochs": fact.epochs,
        "arch": fact.arch,
        "training": fact.training,
        "reason": fact.reason,
        "outcome": fact.outcome,  # not a column: what the tie rule reads
        "val_correct": fact.record.val_correct,  # not a column: per-image outcomes, for paired ties
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
        return Board(list(frame.columns), list(rows[:top] if top is not None else rows), val_size=frame.val_size)
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
