"""Owns rendering a leaderboard: display forms of each column (percent, 12.3K), the rich table
that fits the terminal, and csv / json / markdown text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from cnnsearch.errors import UserError

if TYPE_CHECKING:  # imported where used: `cnnsearch leaderboard` draws its table without them
    import pandas as pd

from cnnsearch.outcomes import as_number
from cnnsearch.results.leaderboard import (
    EMPTY_MESSAGE,
    Board,
    Leaderboard,
    _is_pandas_na,
    _missing,
)

FORMATS = ("csv", "json", "markdown")


def humanise(number: Any) -> str:
    """12345 -> '12.3K', 4_500_000 -> '4.5M', 999 -> '999'; missing -> '-'."""
    value = as_number(number)
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


def percent(value: Any) -> str:
    number = as_number(value)
    return "-" if number is None else f"{number * 100:.2f}%"


def _fixed(digits: int):
    def format_value(value: Any) -> str:
        number = as_number(value)
        return "-" if number is None else f"{number:.{digits}f}"

    return format_value


def _plus_minus(half_width: float | None) -> str:
    """An interval's half-width (fraction) in points: 0.0131 -> '±1.31'."""
    return "-" if half_width is None else f"±{100 * half_width:.2f}"


def plain_text(value: Any) -> str:
    if _missing(value):
        return "-"
    return str(value)


# Display form of each column (terminal, markdown, HTML); csv and json keep raw values.
DISPLAY = {
    "val_acc": percent,
    "params": humanise,
    "flops": humanise,
    "latency_ms": _fixed(2),
    "train_s": _fixed(1),
    "front": lambda value: "yes" if bool(value) else "",
    "val_ci": lambda value: _plus_minus(as_number(value)),
    "tied": lambda value: "≈" if not _missing(value) and bool(value) else "",
}


HEADERS = {"rank": "#", "val_acc": "val acc", "latency_ms": "latency ms", "train_s": "train s", "tied": "tied"}


NUMERIC_COLUMNS = frozenset(
    {"rank", "trial", "val_acc", "val_ci", "params", "flops", "latency_ms", "train_s", "epochs"}
)


WRAPPING_COLUMNS = frozenset({"arch", "training", "reason"})


# Left out of the tables (terminal, HTML) when no row shown has a value: accuracy-only
# searches do not measure latency.
HIDDEN_WHEN_EMPTY = ("latency_ms",)


def _column_values(frame: Leaderboard) -> tuple[list[Any], list[list[Any]]]:
    """The column names and each column's raw values, of a DataFrame or a `Board`."""
    if isinstance(frame, Board):
        return list(frame.columns), [frame.column(column) for column in frame.columns]
    return list(frame.columns), [frame[column].tolist() for column in frame.columns]


def _display_columns(columns: Sequence[Any], values: Sequence[list[Any]]) -> list[list[str]]:
    return [
        [DISPLAY.get(column, plain_text)(value) for value in column_values]
        for column, column_values in zip(columns, values)
    ]


def _rows_of(cells_by_column: list[list[str]]) -> list[list[str]]:
    return [list(row) for row in zip(*cells_by_column)] if cells_by_column else []


def display_cells(frame: Leaderboard) -> list[list[str]]:
    """Every cell of the frame as the text people read (percent, 12.3K, '-' when missing)."""
    return _rows_of(_display_columns(*_column_values(frame)))


def _table_columns(frame: Leaderboard) -> tuple[list[Any], list[list[str]]]:
    """The columns a table shows, and its rows of display cells: like `display_cells`, less
    the HIDDEN_WHEN_EMPTY columns that no row has a value in, with each accuracy's interval in
    its cell ("91.30% ±1.31") rather than a column of its own; `tied` only where a trial other than
    the best is (the best is always tied with itself)."""
    columns, values = _column_values(frame)
    keep = [
        index
        for index, column in enumerate(columns)
        if not (column in HIDDEN_WHEN_EMPTY and all(as_number(value) is None for value in values[index]))
        and not (column == "tied" and sum(1 for value in values[index] if not _missing(value) and bool(value)) < 2)
        and not (column == "val_ci" and "val_acc" in columns)
    ]
    cells = _display_columns([columns[index] for index in keep], [values[index] for index in keep])
    if "val_ci" in columns and "val_acc" in columns:
        position = [columns[index] for index in keep].index("val_acc")
        widths = [DISPLAY["val_ci"](value) for value in values[columns.index("val_ci")]]
        cells[position] = [cell if width == "-" else f"{cell} {width}" for cell, width in zip(cells[position], widths)]
    return [columns[index] for index in keep], _rows_of(cells)


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


def state_style(state: str) -> str:
    if state.startswith("failed") or state in ("interrupted", "stopped"):
        return "red"
    if state.startswith("duplicate") or state in ("infeasible", "over budget"):
        return "dim"
    return STATE_STYLES.get(state, "")


# Columns left out, in this order, when a table must fit a narrow terminal.
OPTIONAL_COLUMNS = ("training", "flops", "train_s", "latency_ms", "epochs", "front")


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
    # Fitted to a width, the training column is there only where the whole arch fits beside it.
    fitted = width is not None and "training" in columns and "arch" in columns
    whole = _natural_widths(columns, rows)["arch"] if fitted else None
    for column in columns:
        # Numbers and states never wrap; long arch strings and reasons fold when space runs out
        # (the arch column not for the training column: that is shown only where both fit).
        wraps = column in WRAPPING_COLUMNS
        table.add_column(
            HEADERS.get(column, column),
            justify="right" if column in NUMERIC_COLUMNS else "left",
            no_wrap=not wraps,
            overflow="fold" if wraps else "ellipsis",
            min_width=None if wraps else len(HEADERS.get(column, column)),
            width=whole if column == "arch" else None,
        )
    state_index = columns.index("state") if "state" in columns else -1
    for row in rows:
        cells = []
        for index, cell in enumerate(row):
            if columns[index] == "front":
                cells.append(Text("●" if cell else "", style="bold magenta"))
            elif index == state_index:
                cells.append(Text(cell, style=state_style(cell)))
            else:
                cells.append(Text(cell))  # user strings: never read as markup
        table.add_row(*cells)
    return table


def _natural_widths(columns: Sequence[Any], cells: list[list[str]]) -> dict[Any, int]:
    return {
        column: max([len(HEADERS.get(column, column))] + [len(row[index]) for row in cells])
        for index, column in enumerate(columns)
    }


def _fit_columns(columns: list[Any], cells: list[list[str]], width: int) -> tuple[list[Any], list[list[str]]]:
    natural = _natural_widths(columns, cells)

    def needed(columns: list[str]) -> int:
        fixed = sum(natural[column] for column in columns if column not in WRAPPING_COLUMNS)
        wrapping = sum(min(natural[column], MIN_ARCH_WIDTH) for column in columns if column in WRAPPING_COLUMNS)
        if "training" in columns and "arch" in columns:  # the training column only beside a whole arch
            wrapping += natural["arch"] - min(natural["arch"], MIN_ARCH_WIDTH)
        return fixed + wrapping + 3 * len(columns) + 1  # borders and padding

    shown = list(columns)
    for column in OPTIONAL_COLUMNS:
        if needed(shown) <= width:
            break
        if column in shown:
            shown.remove(column)
    keep = [columns.index(column) for column in shown]
    return shown, [[row[index] for index in keep] for row in cells]
