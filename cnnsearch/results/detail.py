"""Owns `cnnsearch show`: one trial in full, with its layer table, settings, searched values and
a text chart of its learning curve.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from cnnsearch.errors import InfeasibleArchitecture
from cnnsearch.outcomes import TrialRecord
from cnnsearch.run.folder import RunDir, RunInfo, find_trial

if TYPE_CHECKING:  # imported where used: `cnnsearch leaderboard` draws its table without them
    from cnnsearch.spec import Architecture
from cnnsearch.outcomes import as_integer
from cnnsearch.results.facts import TrialFacts, _number_or_nan, trial_facts
from cnnsearch.results.render import humanise, percent, plain_text, state_style
from cnnsearch.run.liveness import worker_alive
from cnnsearch.spec import Architecture

LATENCY_BATCH_MAX = 256  # train measures latency on min(batch_size, 256) images


def trial_detail(run: RunDir, number: int, *, study: Any = None) -> Group:
    """Everything about one trial: metrics, layer table, settings, searched values, learning curve."""
    info = run.read_info()
    study = study if study is not None else run.load_study(info)
    trial = find_trial(run, study.get_trials(deepcopy=False), number)
    record = TrialRecord.of(trial)
    accuracy_index = info.objective.index("accuracy") if "accuracy" in info.objective else 0
    alive = trial.state.name != "RUNNING" or worker_alive(run, trial)
    fact = trial_facts(trial, accuracy_index=accuracy_index, epochs_budget=info.epochs, alive=alive)

    parts: list[RenderableType] = [_trial_header(fact, record, trial)]
    arch = _architecture(record)
    if arch is None:
        parts.append(Text("No architecture recorded: the trial ended before a candidate was sampled.", style="dim"))
    else:
        parts.append(_layers_table(arch, info))
        parts.append(_settings_table("training", dataclasses.asdict(arch.train)))
        parts.append(_settings_table("augmentation", dataclasses.asdict(arch.augment)))
    if trial.params:
        parts += _searched_values(run, info, dict(trial.params))
    if fact.curve:
        chart = text_chart(fact.curve)
        parts.append(Text("validation accuracy by epoch", style="bold"))
        parts.append(Text(chart))
    else:
        parts.append(Text("No learning curve recorded.", style="dim"))
    return Group(*parts)


def _architecture(record: TrialRecord) -> Architecture | None:
    raw = record.arch
    if not isinstance(raw, dict):
        return None
    try:
        from cnnsearch.spec import Architecture

        return Architecture.from_dict(raw)
    except (KeyError, TypeError, ValueError):
        return None


def _trial_header(fact: TrialFacts, record: TrialRecord, trial: Any) -> RenderableType:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    seconds = fact.train_s
    if seconds is None and trial.datetime_start and trial.datetime_complete:
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
    val_acc = percent(fact.val_acc)
    if fact.val_acc is not None and record.final_val_acc is not None:
        best_epoch = record.best_epoch if record.best_epoch is not None else "?"
        val_acc += f" (final {percent(record.final_val_acc)}, best at epoch {best_epoch})"
    rows = [
        ("trial", str(fact.number)),
        ("outcome", fact.state),
        ("reason", fact.reason),
        ("val acc", val_acc if fact.val_acc is not None else ""),
        ("params", f"{fact.params:,} ({humanise(fact.params)})" if fact.params is not None else ""),
        ("flops", f"{fact.flops:,} ({humanise(fact.flops)})" if fact.flops is not None else ""),
        ("latency", _latency_text(fact.latency_ms, record) if fact.latency_ms is not None else ""),
        ("seconds", f"{seconds:.1f}" if seconds is not None else ""),
        ("epochs run", str(fact.epochs) if fact.epochs is not None else ""),
        ("images/s", plain_text(record.images_per_sec) if record.images_per_sec is not None else ""),
        ("s per epoch", _epoch_seconds_text(record)),
        ("arch", fact.arch),
        ("queued as", _queued_as(record)),
        ("hash", record.hash),
        ("seed", str(record.seed) if record.seed is not None else ""),
        ("worker", record.worker),
        ("device", record.device),
        ("started", trial.datetime_start.isoformat(timespec="seconds") if trial.datetime_start else ""),
    ]
    for key, value in rows:
        if value:
            grid.add_row(Text(key), Text(value, style=state_style(value) if key == "outcome" else ""))
    return grid


def _queued_as(record: TrialRecord) -> str:
    """Why this candidate was tried: a starter of the space, a warm start, or (empty) the sampler."""
    if record.starter is not None:
        return f"starter {record.starter} of the space (trained to the end, never pruned)"
    return "warm start (--enqueue / --from-run)" if record.warm_start else ""


def _epoch_seconds_text(record: TrialRecord) -> str:
    """The cost model's prediction beside the measured seconds per epoch, e.g. `predicted 12.1, measured 10.4`."""
    measured = record.train_seconds / record.epochs_run if record.train_seconds and record.epochs_run else None
    parts = []
    if record.predicted_epoch_s is not None:
        parts.append(f"predicted {record.predicted_epoch_s:.2f}")
    if measured is not None:
        parts.append(f"measured {measured:.2f}")
    if record.predicted_epoch_s is not None and measured:
        parts.append(f"(x{record.predicted_epoch_s / measured:.2f})")
    return " ".join(parts)


def _latency_text(latency_ms: float, record: TrialRecord) -> str:
    arch = record.arch
    batch = as_integer(arch.get("train", {}).get("batch_size")) if isinstance(arch, dict) else None
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


def _searched_values(run: RunDir, info: RunInfo, params: dict[str, Any]) -> list[RenderableType]:
    """The searched values the network uses; those it does not (drawn by the flat encoding for a
    relative sampler) in a line of their own."""
    from cnnsearch.errors import UserError
    from cnnsearch.space.flat import active_params
    from cnnsearch.space.parse import load_space

    try:
        active = active_params(load_space(run.space_file), params, epochs=info.epochs)
    except UserError:  # a damaged space.toml: show every value as it was stored
        active = None
    if active is None or len(active) == len(params):
        return [_settings_table("searched values", params)]
    unused = ", ".join(f"{name}={_setting_text(value)}" for name, value in params.items() if name not in active)
    return [
        _settings_table("searched values", active),
        Text(f"drawn but not used by this network (flat encoding of --sampler {info.sampler}): {unused}", style="dim"),
    ]


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
