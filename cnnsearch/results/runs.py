"""Owns `cnnsearch runs`: one row per run folder with its trials counted by outcome group."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from cnnsearch.outcomes import count_groups
from cnnsearch.run.folder import RunDir, list_run_names

if TYPE_CHECKING:  # imported where used: `cnnsearch leaderboard` draws its table without them
    import pandas as pd

from cnnsearch.errors import first_line
from cnnsearch.results.facts import STOPPED_NOTE, TRAINED_TO_THE_END, study_facts
from cnnsearch.results.render import percent, plain_text
from cnnsearch.words import count

RUNS_COLUMNS = (
    "name",
    "data",
    "trials",
    "complete",
    "pruned",
    "skipped",
    "failed",
    "best_val_acc",
    "last_activity",
    "running",
    "note",
)


def runs_frame(runs_dir: str | Path, *, now: float | None = None) -> pd.DataFrame:
    """One row per run folder: counts of trials by outcome, best accuracy, last activity.

    complete counts duplicates, skipped counts infeasible and over-budget candidates, failed
    counts oom/nan/timeout/error/interrupted. `running` is True while a RUNNING trial's worker
    is alive (see `worker_alive`); RUNNING trials whose worker is gone are counted in the note.
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
            facts = study_facts(study, info, run=run, now=now)
        # A damaged or unreachable run must not hide the others: any error becomes its note.
        except Exception as error:  # noqa: BLE001 — journal, RDB and JSON errors all land here
            row["note"] = first_line(error)
            rows.append(row)
            continue
        outcomes = [fact.outcome for fact in facts]
        trained = [fact.val_acc for fact in facts if fact.outcome in TRAINED_TO_THE_END and fact.val_acc is not None]
        moments = [moment for fact in facts for moment in (fact.started, fact.finished) if moment is not None]
        # Groups from the one vocabulary; a stopped trial is not finished: it shows in the note.
        groups = count_groups([outcome for outcome in outcomes if outcome != "stopped"])
        row.update(
            trials=len(facts),
            complete=sum(outcome in TRAINED_TO_THE_END for outcome in outcomes),
            pruned=outcomes.count("pruned"),
            skipped=groups["skipped"],
            failed=groups["failed"],
            best_val_acc=max(trained) if trained else None,
            last_activity=max(moments).isoformat(timespec="seconds") if moments else "",
            running="running" in outcomes,
        )
        if "stopped" in outcomes:
            row["note"] = f"{count(outcomes.count('stopped'), 'trial')} stopped ({STOPPED_NOTE})"
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
                cells.append(Text(percent(value)))
            elif column == "running":
                cells.append(Text("running" if value else "", style="bold cyan"))
            elif column == "note":
                cells.append(Text("" if value is None else str(value), style="red"))
            else:
                cells.append(Text(plain_text(value) if value is not None else ""))
        table.add_row(*cells)
    return table
