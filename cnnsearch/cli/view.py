"""Owns showing a running search: a rich live view on a terminal, one line per trial otherwise.

Fed with `search.SearchEvent`s (one worker in this process) or by polling the study (several
worker processes). Knows nothing of training: it only draws what it is told.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from cnnsearch.outcomes import (
    OUTCOMES,
    STATE_OUTCOMES,
    TrialRecord,
    best_so_far,
    count_groups,
    rank_key,
    trial_outcome,
)
from cnnsearch.search.progress import SearchEvent
from cnnsearch.search.settings import UNLIMITED_TRIALS

COUNTED = OUTCOMES["complete"]  # how an outcome this version does not know is counted


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def trials_phrase(target: int, timeout_s: float | None) -> str:
    """`20 trials`, or for a --timeout search without --trials `as many trials as fit in 7m00s`."""
    if target >= UNLIMITED_TRIALS:
        return f"as many trials as fit in {format_seconds(timeout_s)}"
    return f"{target} trials"


@dataclass
class RunningTrial:
    trial: int
    compact: str
    epochs: int
    epoch: int = 0
    val_acc: float | None = None
    worker: str = ""
    device: str = ""
    predicted_s: float | None = None  # the cost model's seconds for the whole schedule; None: not predicted


def counted(counts: dict[str, int]) -> int:
    """Finished trials that count toward --trials, as search.progress.counted_trials counts them (a
    too_slow candidate never trained; a trial Optuna failed without an outcome, "failed", is not one)."""
    return sum(
        count
        for outcome, count in counts.items()
        if outcome != STATE_OUTCOMES["FAIL"] and OUTCOMES.get(outcome, COUNTED).counted
    )


@dataclass
class ProgressState:
    """What the view shows; updated by events."""

    name: str
    target: int
    done_before: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    running: dict[int, RunningTrial] = field(default_factory=dict)
    best_trial: int | None = None
    best_val_acc: float | None = None
    best_compact: str = ""
    best_params: int | None = None  # for the tie rule (outcomes.rank_key)
    started: float = field(default_factory=time.monotonic)
    deadline: float | None = None
    finished_seconds: list[float] = field(default_factory=list)
    note: str = ""  # e.g. that a Ctrl-C is being honoured; shown under the header

    @property
    def unlimited(self) -> bool:
        """A --timeout search without --trials: as many trials as the time allows."""
        return self.target >= UNLIMITED_TRIALS

    @property
    def finished(self) -> int:
        return self.done_before + counted(self.counts)

    def time_left(self) -> float | None:
        """The sooner of the deadline and the remaining trials at the pace so far."""
        estimates = []
        if self.deadline is not None:
            estimates.append(self.deadline - time.monotonic())
        new = counted(self.counts)
        if new:
            pace = (time.monotonic() - self.started) / new
            estimates.append(pace * max(0, self.target - self.finished))
        return min(estimates) if estimates else None

    def apply(self, event: SearchEvent) -> None:
        if event.kind == "trial_start":
            self.running[event.trial] = RunningTrial(
                event.trial,
                event.compact,
                event.epochs,
                worker=event.worker,
                device=event.device,
                predicted_s=event.predicted_s,
            )
        elif event.kind == "epoch" and event.trial in self.running:
            self.running[event.trial].epoch = event.epoch
            self.running[event.trial].val_acc = event.val_acc
        elif event.kind == "trial_end":
            self.running.pop(event.trial, None)
            if event.outcome == "interrupted":
                return  # it will be re-run: not a finished trial
            self.counts[event.outcome] = self.counts.get(event.outcome, 0) + 1
            if event.finished_total is not None:  # other workers' trials count too
                self.done_before = max(0, event.finished_total - counted(self.counts))
            if event.outcome == "complete" and event.best_val_acc is not None:
                key = rank_key(event.best_val_acc, event.params or None, event.trial)
                if self.best_trial is None or self.best_val_acc is None or key < self._best_key():
                    self.best_trial, self.best_val_acc, self.best_compact = (
                        event.trial,
                        event.best_val_acc,
                        event.compact,
                    )
                    self.best_params = event.params or None

    def _best_key(self) -> tuple[float, float, int]:
        assert self.best_trial is not None and self.best_val_acc is not None
        return rank_key(self.best_val_acc, self.best_params, self.best_trial)


def render(state: ProgressState) -> Group:
    counts = state.counts
    groups = count_groups([outcome for outcome, count in counts.items() for _ in range(count)])
    # Two short lines, not one long one: the live view crops (it never wraps) at the terminal's width.
    header = Text.assemble(
        (f"search {state.name}  ", "bold"),
        f"{state.finished}{'' if state.unlimited else '/' + str(state.target)} trials  ",
        f"elapsed {format_seconds(time.monotonic() - state.started)}  ",
        f"left ~{format_seconds(state.time_left())}",
        "\n",
        (f"{counts.get('complete', 0)} complete  ", "green"),
        (f"{counts.get('pruned', 0)} pruned  ", "yellow"),
        (f"{groups['skipped']} skipped  ", "dim"),
        (f"{groups['failed']} failed  ", "red"),
        f"{counts.get('duplicate', 0)} duplicates",
    )
    # A bar ends no line by itself: in a grid row it gets its own, so the table header is not
    # pushed off a narrow terminal.
    overall = Table.grid()
    if state.unlimited and state.deadline is not None:  # the deadline ends it: a bar of time
        budget = max(1.0, state.deadline - state.started)
        overall.add_row(ProgressBar(total=budget, completed=min(budget, time.monotonic() - state.started), width=60))
    else:
        overall.add_row(ProgressBar(total=max(1, state.target), completed=state.finished, width=60))
    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
    for column in ("trial", "candidate", "epoch", "", "val acc", "predicted", "device"):
        table.add_column(column)
    for running in sorted(state.running.values(), key=lambda item: item.trial):
        table.add_row(
            str(running.trial),
            Text(running.compact),
            f"{running.epoch}/{running.epochs}",
            ProgressBar(total=max(1, running.epochs), completed=running.epoch, width=20),
            f"{running.val_acc:.2%}" if running.val_acc is not None else "—",
            format_seconds(running.predicted_s) if running.predicted_s is not None else "—",
            Text(running.device),
        )
    best = (
        Text.assemble(
            ("best so far: ", "bold"),
            f"trial {state.best_trial}  {state.best_val_acc:.2%}  ",
            Text(state.best_compact, style="cyan"),
        )
        if state.best_val_acc is not None
        else Text("best so far: no finished trial yet", style="dim")
    )
    parts = [header, Text(state.note, style="yellow")] if state.note else [header]
    return Group(*parts, overall, table, best)


class SearchView:
    """Consumes events; draws live on a terminal, or prints one line per finished trial."""

    def __init__(
        self, state: ProgressState, *, console: Console | None = None, live: bool | None = None,
        messages: Console | None = None,
    ) -> None:  # fmt: skip
        self.state = state
        self.console = console or Console(stderr=False)
        self.messages = messages or Console(stderr=True)  # notes when not drawing live
        self.live_enabled = self.console.is_terminal if live is None else live
        self.live: Live | None = None

    def __enter__(self) -> SearchView:
        if self.live_enabled:
            self.live = Live(render(self.state), console=self.console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.update(render(self.state))
            self.live.__exit__(*exc)

    def __call__(self, event: SearchEvent) -> None:
        self.state.apply(event)
        if self.live is not None:
            self.live.update(render(self.state))
        elif event.kind == "trial_end":
            self.console.print(plain_line(self.state, event), highlight=False, soft_wrap=True)
        elif event.kind == "message":
            self.console.print(Text(event.text), soft_wrap=True)

    def notify(self, text: str) -> None:
        """A note for the user: inside the live view (a line printed beside it would be drawn
        over), else one line on the message console."""
        if self.live is not None:
            self.state.note = text
            self.live.update(render(self.state))
        else:
            self.messages.print(Text(text), highlight=False)

    def refresh(self) -> None:
        if self.live is not None:
            self.live.update(render(self.state))


def plain_line(state: ProgressState, event: SearchEvent) -> Text:
    if event.outcome == "interrupted":
        return Text(f"trial {event.trial} interrupted ({event.reason}); it resumes from its last finished epoch")
    accuracy = f"{event.best_val_acc:.2%}" if event.best_val_acc is not None else "—"
    best = f"{state.best_val_acc:.2%} (trial {state.best_trial})" if state.best_val_acc is not None else "—"
    reason = f" ({event.reason})" if event.reason and event.outcome != "complete" else ""
    return Text(
        f"[{state.finished}{'' if state.unlimited else '/' + str(state.target)}] trial {event.trial} {event.outcome}{reason}: val {accuracy}  "
        f"{event.compact}  {event.seconds:.1f}s  best {best}  left ~{format_seconds(state.time_left())}"
    )


def state_from_study(study: Any, state: ProgressState) -> None:
    """Refresh a view's state from the study itself (several worker processes)."""
    state.counts.clear()
    state.running.clear()
    state.done_before = 0
    trials = study.get_trials(deepcopy=False)
    for trial in trials:
        record = TrialRecord.of(trial)
        if trial.state.name == "RUNNING":
            train = (record.arch or {}).get("train", {})
            state.running[trial.number] = RunningTrial(
                trial.number,
                record.compact,
                int(train.get("epochs", 0)),
                epoch=record.current_epoch or 0,
                val_acc=record.val_acc[-1] if record.val_acc else record.current_val_acc,
                worker=record.worker,
                device=record.device,
                predicted_s=None
                if record.predicted_epoch_s is None
                else record.predicted_epoch_s * int(train.get("epochs", 0)),
            )
            continue
        outcome = trial_outcome(trial)
        if outcome in ("interrupted", "waiting"):  # re-run, or not started: not finished trials
            continue
        state.counts[outcome] = state.counts.get(outcome, 0) + 1
    best = best_so_far(trials)
    if best is not None:
        state.best_trial, state.best_val_acc, state.best_compact, state.best_params = best


def event_from_trial(trial: Any) -> SearchEvent:
    """A finished trial as the event its worker would have sent (for views that poll the study)."""
    record = TrialRecord.of(trial)
    return SearchEvent(
        kind="trial_end",
        trial=trial.number,
        compact=record.compact,
        outcome=trial_outcome(trial),
        reason=record.reason,
        best_val_acc=record.best_val_acc,
        params=record.params or 0,
        seconds=record.train_seconds or 0.0,
        worker=record.worker,
        device=record.device,
    )


def start_from_study(study: Any, state: ProgressState) -> set[int]:
    """Seed a view with what the run already holds (best so far, trials done); their numbers."""
    state_from_study(study, state)
    state.done_before = counted(state.counts)
    state.counts.clear()
    state.running.clear()
    return {trial.number for trial in study.get_trials(deepcopy=False) if trial.state.is_finished()}
