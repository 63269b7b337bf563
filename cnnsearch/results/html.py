"""Owns the self-contained HTML report: runs/<name>/report.html, with its plots also written as
PNG files in runs/<name>/report/.
"""

from __future__ import annotations

import datetime
import html
import json
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnsearch.run.folder import RunDir, RunInfo, unwritable, write_atomic
from cnnsearch.run.storage import describe_storage

if TYPE_CHECKING:  # imported where used: `cnnsearch leaderboard` draws its table without them
    pass
from cnnsearch.errors import UserError, first_line
from cnnsearch.outcomes import as_number
from cnnsearch.results.facts import TrialFacts, study_facts
from cnnsearch.results.leaderboard import (
    EMPTY_MESSAGE,
    Board,
    Leaderboard,
    make_board,
    run_objectives,
    sort_and_cut,
    tie_note,
    validation_size,
)
from cnnsearch.results.plots import (
    _cost_section,
    _curves_section,
    _Images,
    _importance_section,
    _outcome_counts,
    _progress_section,
    _time_section,
)
from cnnsearch.results.render import (
    HEADERS,
    NUMERIC_COLUMNS,
    _table_columns,
    humanise,
    percent,
)

REPORT_TOP = 20  # leaderboard rows in the HTML report


PLOT_NAMES = ("best_so_far", "time", "accuracy_vs_cost", "importance", "learning_curves")  # report/<name>.png


def write_report(run: RunDir, *, study: Any = None) -> Path:
    """Write `runs/<name>/report.html` (one self-contained file) and its plots as PNGs in `report/`.

    Returns the path of the HTML file. A run without finished trials still gets a report that
    says so.
    """
    info = run.read_info()
    study = study if study is not None else run.load_study(info)
    facts = study_facts(study, info, run=run)
    objectives = run_objectives(study, info)
    frame = make_board(facts, objectives, include_all=False, val_size=validation_size(info))
    problem = unwritable(run.path)
    if problem:
        raise UserError(
            f"cannot write the report: {run.path} {problem}; copy the run folder somewhere writable and pass --runs-dir there"
        )
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
        ties = tie_note(frame)
        note = f"<p class='note'>{html.escape(ties)}</p>" if ties else ""
        sections.append("<h2>Leaderboard</h2>" + _html_table(sort_and_cut(frame, top=REPORT_TOP)) + note)
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


def _settings_section(run: RunDir, info: RunInfo) -> str:
    split = ", ".join(
        f"{key} {value:,}" if isinstance(value, int) else f"{key} {value}" for key, value in info.split_sizes.items()
    )
    settings: list[tuple[str, Any]] = [
        ("run", info.name),
        ("data", info.data),
        ("data folder", info.data_dir),
        ("input shape (C, H, W)", " x ".join(str(side) for side in info.input_shape)),
        (
            "classes",
            f"{len(info.class_names)}: {', '.join(info.class_names[:20])}{' …' if len(info.class_names) > 20 else ''}",
        ),
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
        accuracy = as_number(entry.get("test_accuracy"))
        text = f"test accuracy <b>{percent(accuracy)}</b>" if accuracy is not None else "no test accuracy recorded"
        size = f" on {entry['test_size']} held-out images, evaluated once" if entry.get("test_size") else ""
        searched = as_number(entry.get("val_accuracy"))
        if searched is not None:  # the search's figure beside the final one
            epochs = entry.get("retrain_epochs")
            final = f" after a final training of {html.escape(str(epochs))} epochs" if entry.get("retrained") else ""
            size += f"; search validation accuracy {percent(searched)}{final}"
        items.append(
            f"<li>{html.escape(str(entry.get('out', '')))} (trial {html.escape(str(entry.get('trial')))}, "
            f"<code>{html.escape(str(entry.get('compact', '')))}</code>): {text}{size}</li>"
        )
    for path in sorted(run.path.rglob("model.json")):
        where = html.escape(str(path.relative_to(run.path)))
        try:
            model = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            items.append(f"<li>{where}: unreadable ({html.escape(first_line(error))})</li>")
            continue
        accuracy = as_number(model.get("test_accuracy")) if isinstance(model, dict) else None
        trial = model.get("trial") if isinstance(model, dict) else None
        text = f"test accuracy <b>{percent(accuracy)}</b>" if accuracy is not None else "no test accuracy recorded"
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
        f"<p>Best: trial {int(best['trial'])}, validation accuracy <b>{percent(best['val_acc'])}</b>, "
        f"{humanise(best['params'])} params, <code>{html.escape(str(best['arch']))}</code></p>"
    )


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
