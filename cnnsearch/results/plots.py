"""Owns the report's plots: best so far, where the time went, accuracy against cost with its
Pareto front, importances and learning curves. matplotlib is imported inside the functions.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnsearch.outcomes import group_of
from cnnsearch.run.folder import RunInfo

if TYPE_CHECKING:  # imported where used: `cnnsearch leaderboard` draws its table without them
    import numpy as np

from cnnsearch.errors import first_line
from cnnsearch.results.detail import LATENCY_BATCH_MAX
from cnnsearch.results.facts import TRAINED_TO_THE_END, TrialFacts, study_facts
from cnnsearch.results.leaderboard import Board, pareto_ranks
from cnnsearch.results.render import humanise, percent

TIME_OUTCOMES = (  # "where the time went", in this order
    "complete",
    "pruned",
    "infeasible",
    "over_budget",
    "oom",
    "nan",
    "timeout",
    "error",
    "failed",
    "interrupted",
    "duplicate",
    "running",
    "stopped",
)


CURVES_TOP = 5  # learning curves drawn in full colour


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


def _outcome_counts(facts: Sequence[TrialFacts]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for fact in facts:
        counts[fact.outcome] = counts.get(fact.outcome, 0) + 1
    order = {outcome: index for index, outcome in enumerate(TIME_OUTCOMES)}
    return dict(sorted(counts.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))


def _progress_section(facts: Sequence[TrialFacts], images: _Images) -> str:
    import numpy as np

    trained = [fact for fact in facts if fact.outcome in TRAINED_TO_THE_END and fact.val_acc is not None]
    if not trained:
        return ""
    starts = [fact.started for fact in facts if fact.started is not None]
    origin = min(starts) if starts else None
    figure, (by_time, by_number) = _figure(2)

    finished = [(fact.finished, fact) for fact in trained if fact.finished is not None]
    timed = [fact for _, fact in sorted(finished, key=lambda pair: pair[0])] if origin is not None else []
    if timed and origin is not None:
        elapsed = np.array(
            [(moment - origin).total_seconds() for moment, _ in sorted(finished, key=lambda pair: pair[0])]
        )
        unit, scale = ("hours", 3600.0) if elapsed.max() > 3 * 3600 else ("minutes", 60.0)
        best = np.maximum.accumulate(np.array([fact.val_acc for fact in timed]))
        by_time.step(elapsed / scale, best * 100, where="post", color="tab:blue")
        by_time.scatter(elapsed / scale, [(fact.val_acc or 0.0) * 100 for fact in timed], s=6, color="0.6", alpha=0.6)
        by_time.set_xlabel(f"wall clock since the first trial started ({unit})")
    by_time.set_ylabel("best validation accuracy (%)")
    by_time.set_title("best so far, over time")

    ordered = sorted(trained, key=lambda fact: fact.number)
    numbers = np.array([fact.number for fact in ordered])
    accuracies = np.array([fact.val_acc for fact in ordered])
    by_number.scatter(numbers, accuracies * 100, s=6, color="0.6", alpha=0.6, label="trial")
    by_number.step(
        numbers, np.maximum.accumulate(accuracies) * 100, where="post", color="tab:blue", label="best so far"
    )
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


def _clip_accuracy_axis(axes: Sequence[Any], accuracies: np.ndarray, *, keep: Sequence[float] = ()) -> None:
    """Zoom on the interesting band: a few bad trials should not squash the best ones. The
    accuracies in `keep` (a Pareto front's members) always stay in view, however low."""
    import numpy as np

    if len(accuracies) == 0:
        return
    low = max(min([float(np.percentile(accuracies, 5)), *keep]) * 100 - 2, 0.0)
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
    return int(fact.state[len(prefix) :]) if fact.state.startswith(prefix) else None


def _outcome_colour(outcome: str) -> str:
    if outcome == "complete":
        return "tab:green"
    if outcome == "pruned":
        return "tab:orange"
    if group_of(outcome) == "failed":
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
        _clip_accuracy_axis([axis], accuracy, keep=accuracy[front].tolist())
        members = sorted((points[index] for index in np.flatnonzero(front)), key=lambda fact: getattr(fact, column))
        listed.append((column, members))
    text = "".join(
        f"<p>Front on accuracy and {html.escape(column)}: "
        + ", ".join(
            f"#{fact.number} ({percent(fact.val_acc)}, {_cost_text(column, getattr(fact, column))})" for fact in members
        )
        + "</p>"
        for column, members in listed
    )
    return (
        "<h2>Accuracy against cost</h2>"
        + images.embed(
            figure,
            "accuracy_vs_cost",
            "validation accuracy against "
            + " and ".join("latency" if column == "latency_ms" else column for column, _ in listed),
        )
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


def param_importances(
    study: Any, info: RunInfo, facts: Sequence[TrialFacts] | None = None
) -> tuple[dict[str, float], str]:
    """Optuna's importances of the searched values for validation accuracy, or ({}, why not)."""
    import optuna

    facts = facts if facts is not None else study_facts(study, info)
    usable = [fact for fact in facts if fact.outcome in TRAINED_TO_THE_END and fact.values is not None]
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
            return {}, f"{not_enough[:-1]}: {first_line(error)}."
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
            marker="x",
            s=14,
            color="0.45",
            alpha=0.5,
            label=f"pruned ({len(pruned)}), x where stopped",
        )
    for fact in top:
        epochs = np.arange(1, len(fact.curve) + 1)
        axis.plot(
            epochs,
            np.array(fact.curve) * 100,
            marker="o",
            markersize=3,
            linewidth=1.6,
            label=f"#{fact.number} {percent(fact.val_acc)}",
        )
    from matplotlib.ticker import MaxNLocator

    axis.autoscale_view()
    longest = max(len(fact.curve) for fact in [*top, *pruned])
    axis.set_xlim(0.5, longest + 0.5)  # whole epochs: a 1-epoch run reads 1, not 0.96 .. 1.04
    axis.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    axis.set_xlabel("epoch")
    axis.set_ylabel("validation accuracy (%)")
    parts = ([f"top {len(top)}"] if top else []) + (["pruned trials"] if pruned else [])
    axis.set_title("learning curves: " + " and ".join(parts))
    axis.legend(loc="lower right", fontsize="small")
    return "<h2>Learning curves</h2>" + images.embed(figure, "learning_curves", "learning curves")
