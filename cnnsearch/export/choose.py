"""Owns choosing what to export: the finished trials that can be (best first), the winner among
them (`choose_winner`: by default the best validation accuracy; --choose cheapest-tied takes the
cheapest of those tied with it within the noise of the validation set, `cnnsearch.results.noise`), one named by `--trial`, and the confirmation of
the top candidates over several seeds (`--top/--seeds`), on the validation split only: the test
split takes no part in any choice.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from cnnsearch.data.dataset import Dataset
from cnnsearch.data.device import to_device
from cnnsearch.data.split import load_split
from cnnsearch.errors import UserError
from cnnsearch.export.options import DEFAULT_CHOICE, check_choice
from cnnsearch.outcomes import EXPORTABLE, STOPPED_BY_TIMEOUT, TrialRecord, phrase_of, rank_key
from cnnsearch.results.leaderboard import validation_size
from cnnsearch.results.noise import interval_text, tied_outcomes
from cnnsearch.run.folder import RunDir, RunInfo, find_trial
from cnnsearch.spec import Architecture
from cnnsearch.train.loop import train_candidate
from cnnsearch.train.result import TrialControl
from cnnsearch.words import count

CONFIRM_SEED_STRIDE = 1000  # confirmation seed k of trial n: run seed + 1000 * k + n


@dataclass
class ConfirmationRow:
    """One candidate retrained with several seeds on the training split (--top)."""

    trial: int
    compact: str
    search_val_acc: float  # best validation accuracy recorded by the search
    seeds: list[int] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)  # best validation accuracy per seed, as in the search
    failures: list[str] = field(default_factory=list)  # "seed 1003: nan (...)" for trainings that did not complete

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.accuracies) if self.accuracies else None

    @property
    def sd(self) -> float | None:
        """Sample standard deviation over the seeds (0 for a single seed)."""
        if not self.accuracies:
            return None
        return statistics.stdev(self.accuracies) if len(self.accuracies) > 1 else 0.0

    def line(self) -> str:
        if self.mean is None:
            return f"trial {self.trial} {self.compact}: every retraining failed ({'; '.join(self.failures)})"
        text = (
            f"trial {self.trial} {self.compact}: {self.mean:.2%} ± {100 * self.sd:.2f} points over "
            f"{count(len(self.accuracies), 'seed')} (search {self.search_val_acc:.2%})"
        )
        if self.failures:
            text += f"; {len(self.failures)} failed: {'; '.join(self.failures)}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "trial": self.trial,
            "compact": self.compact,
            "search_val_acc": self.search_val_acc,
            "seeds": self.seeds,
            "val_accuracies": self.accuracies,
            "mean": self.mean,
            "sd": self.sd,
            "failures": self.failures,
        }


@dataclass
class _Candidate:
    """A finished trial that can be exported."""

    number: int
    arch: Architecture
    val_acc: float  # best validation accuracy over the epochs, as the search ranks
    final_val_acc: float | None  # after the last epoch: that of the weights the search kept
    best_epoch: int | None
    seed: int
    weights_trial: int  # whose weights file holds its weights (a duplicate's original)
    hash: str
    params: int | None = None
    flops: int | None = None  # per image, as the leaderboard shows
    timed_out: bool = False  # stopped by the trial timeout: ranked after those trained to the end
    val_correct: str = ""  # the best epoch's per-image outcomes: ties are judged paired where both have them


@dataclass(frozen=True)
class Choice:
    """The trial export takes when none is named, and why."""

    chosen: _Candidate
    best: _Candidate  # the best validation accuracy (trained to the end, if any was)
    tied: list[_Candidate]  # those tied with `best`, `best` included, cheapest first
    val_size: int | None  # validation images: the noise every tie is judged by
    rule: str  # a key of export.options.CHOICES

    def line(self) -> str:
        """'trial 7: tied with the best (trial 3, 91.30% ±1.31) at 90.80% ±1.35, and 3.1x fewer FLOPs'."""
        chosen, best, n = self.chosen, self.best, self.val_size
        if n is None:
            return (
                f"trial {chosen.number}: the best validation accuracy, {chosen.val_acc:.2%} (the run does not "
                f"record its validation size, so no ties can be judged)"
            )
        others = len(self.tied) - 1
        if chosen.number != best.number:
            return (
                f"trial {chosen.number}: tied with the best (trial {best.number}, {interval_text(best.val_acc, n)}) "
                f"at {interval_text(chosen.val_acc, n)}, and {_cheaper(chosen, best)} "
                f"(the cheapest of the {len(self.tied)} tied, by --choose cheapest-tied)"
            )
        text = f"trial {chosen.number}: the best validation accuracy, {interval_text(chosen.val_acc, n)}"
        if others == 0:
            return f"{text}; no other trial is within its noise ({n:,} validation images)"
        cheapest = self.tied[0]
        if self.rule == "best" and cheapest.number != chosen.number:
            return (
                f"{text}; trial {cheapest.number} is tied with it and has {_cheaper(cheapest, chosen)} "
                f"(--choose cheapest-tied takes it)"
            )
        return f"{text}; none of the {count(others, 'other trial')} tied with it is cheaper"


def retrainable_tie(choice: Choice, schedule_of: Callable[[_Candidate], Any]) -> tuple[_Candidate, Any, str] | None:
    """`search --export` when the time left cannot retrain the chosen trial for its search's epochs
    (only its search weights could ship): the most accurate trial tied with it that the time left
    does retrain that long, with its schedule (`schedule_of`: a FinalSchedule or None) and why;
    None when there is none. Final training on train+validation added 0.6-1.2 points to the
    search weights' test accuracy (bench/RESULTS.md), more than a tie can be worth."""
    chosen = choice.chosen
    for candidate in sorted(choice.tied, key=lambda c: (-c.val_acc, c.number)):
        if candidate.number == chosen.number:
            continue
        schedule = schedule_of(candidate)
        if schedule is not None and schedule.epochs >= candidate.arch.train.epochs:
            n = choice.val_size
            why = (
                f"trial {candidate.number}: tied with the best (trial {chosen.number}, "
                f"{interval_text(chosen.val_acc, n)}) at {interval_text(candidate.val_acc, n)}, and the time left "
                f"trains it for {count(schedule.epochs, 'epoch')} on train+validation, where trial {chosen.number} "
                f"would get fewer than its search's {count(chosen.arch.train.epochs, 'epoch')}"
            )
            return candidate, schedule, why
    return None


def _cheaper(cheap: _Candidate, dear: _Candidate) -> str:
    """'3.1x fewer FLOPs' (or params, where the FLOPs are equal or unknown)."""
    for what, low, high in (("FLOPs", cheap.flops, dear.flops), ("params", cheap.params, dear.params)):
        if low is not None and high is not None and low < high:
            return f"{high / low:.1f}x fewer {what}" if low > 0 else f"fewer {what}"
    return "no higher cost"


def choose_winner(candidates: Sequence[_Candidate], *, val_size: int | None, rule: str = DEFAULT_CHOICE) -> Choice:
    """The trial to export among `candidates` (best first, as `_candidates` returns them).

    The best is `candidates[0]`. Tied with it: every candidate whose accuracy is within the
    noise of `val_size` validation images (`results.noise.tied_outcomes`: paired where both
    recorded per-image outcomes; the leaderboard's ≈). "best"
    takes the best; "cheapest-tied" the tied candidate with the fewest FLOPs, then params, then
    the higher accuracy and the lower number. Without `val_size` nothing is tied.
    """
    check_choice(rule)
    if not candidates:
        raise ValueError("choose_winner needs at least one candidate")
    best = candidates[0]
    if val_size is None:
        return Choice(best, best, [best], None, rule)
    best_pair = (best.val_acc, best.val_correct)
    tied_ones = [c for c in candidates if tied_outcomes(best_pair, (c.val_acc, c.val_correct), val_size)[0]]
    tied_ones.sort(key=lambda c: (_cost(c.flops), _cost(c.params), -c.val_acc, c.number))
    chosen = tied_ones[0] if rule == "cheapest-tied" else best
    return Choice(chosen, best, tied_ones, val_size, rule)


def choose_export_trial(run: RunDir, *, rule: str = DEFAULT_CHOICE) -> Choice | None:
    """The winner of the run's finished trials by `rule` (see `choose_winner`); None when it has none."""
    check_choice(rule)
    info = run.read_info()
    candidates = _candidates(run.load_study(info).get_trials(deepcopy=False))
    return choose_among(run, info, candidates, rule=rule) if candidates else None


def choose_among(run: RunDir, info: RunInfo, candidates: Sequence[_Candidate], *, rule: str) -> Choice:
    """`choose_winner` with the run's validation size (from run.json, else split.npz)."""
    val_size = validation_size(info)
    if val_size is None and run.split_file.is_file():  # runs from before split sizes were recorded
        val_size = len(load_split(run.split_file).val_indices) or None
    return choose_winner(candidates, val_size=val_size, rule=rule)


def _candidates(trials: Sequence[Any]) -> list[_Candidate]:
    """Finished trials with an architecture and an accuracy, best first (ties: fewer params, then
    the lower number), as the leaderboard ranks: trained trials, then those the trial timeout stopped."""
    # A duplicate's figures (and kept weights) are its original's: so is the seed they were trained with.
    seeds = {trial.number: TrialRecord.of(trial).seed for trial in trials}
    found = [_to_candidate(trial, seeds) for trial in trials if _is_exportable(trial)]
    found.sort(
        key=lambda candidate: (candidate.timed_out, *rank_key(candidate.val_acc, candidate.params, candidate.number))
    )
    return found


def _cost(value: int | None) -> float:
    return float(value) if value is not None else math.inf  # an unmeasured cost is never the cheaper


def _is_exportable(trial: Any) -> bool:
    """Trained to the end, or stopped by the trial timeout after an epoch (its weights are real)."""
    record = TrialRecord.of(trial)
    finished = trial.state.name == "COMPLETE" or (trial.state.name == "PRUNED" and record.outcome in EXPORTABLE)
    return finished and record.arch is not None and record.best_val_acc is not None


def _to_candidate(trial: Any, seeds: dict[int, int | None] | None = None) -> _Candidate:
    record = TrialRecord.of(trial)
    weights_trial = record.duplicate_of if record.duplicate_of is not None else trial.number
    seed = (seeds or {}).get(weights_trial, record.seed)
    assert record.arch is not None and record.best_val_acc is not None  # checked by _is_exportable
    arch = Architecture.from_dict(record.arch)
    return _Candidate(
        number=trial.number,
        arch=arch,
        val_acc=record.best_val_acc,
        final_val_acc=record.final_val_acc,
        best_epoch=record.best_epoch,
        seed=seed if seed is not None else trial.number,
        weights_trial=weights_trial,
        hash=record.hash or arch.canonical_hash(),
        params=record.params,
        flops=record.flops,
        timed_out=record.outcome in STOPPED_BY_TIMEOUT,
        val_correct=record.val_correct,
    )


def _candidate(run: RunDir, trials: Sequence[Any], number: int) -> _Candidate:
    trial = find_trial(run, trials, number)
    record = TrialRecord.of(trial)
    if record.arch is None:
        raise UserError(f"trial {number} of run {run.name!r} has no recorded architecture; choose another --trial")
    if not _is_exportable(trial):
        state = trial.state.name.lower()
        outcome = state if state in ("running", "waiting") else (record.outcome or state)
        # "trial 3 of run 'x' was pruned (reason), ..."; a trained one that lacks an accuracy says so.
        what = phrase_of(outcome) if outcome not in EXPORTABLE else f"ended {outcome} without a validation accuracy"
        reason = record.reason
        why = f" ({reason})" if reason and outcome not in ("running", "waiting") else ""
        raise UserError(
            f"trial {number} of run {run.name!r} {what}{why}, so it has no final result; "
            f"choose a complete or timed-out trial (see cnnsearch leaderboard {run.name})"
        )
    return _to_candidate(trial, {t.number: TrialRecord.of(t).seed for t in trials})  # the --trial of `export`


def _confirm(
    run: RunDir,
    info: RunInfo,
    dataset: Dataset,
    candidates: list[_Candidate],
    *,
    top: int,
    seeds: int,
    device: torch.device,
    on_message: Callable[[str], None],
) -> list[ConfirmationRow]:
    """Retrain the `top` best distinct candidates `seeds` times on the training split; best mean first.

    Seeds are fresh (k = 1..seeds): the search's own seed is the one that made a candidate look
    best, so repeating it would carry the selection's luck into the confirmation.
    """
    distinct: list[_Candidate] = []
    for candidate in candidates:
        if all(candidate.hash != other.hash for other in distinct):
            distinct.append(candidate)
    if len(distinct) < top:
        on_message(
            f"--top {top}: the run has only {count(len(distinct), 'distinct finished candidate')}; confirming all of them"
        )
    chosen = distinct[:top]
    data = to_device(dataset, load_split(run.split_file), device)
    rows: list[ConfirmationRow] = []
    total, done = len(chosen) * seeds, 0
    for candidate in chosen:
        row = ConfirmationRow(
            trial=candidate.number, compact=candidate.arch.compact(), search_val_acc=candidate.val_acc
        )
        for k in range(1, seeds + 1):
            seed = info.seed + CONFIRM_SEED_STRIDE * k + candidate.number
            done += 1
            result = train_candidate(candidate.arch, data, control=TrialControl(seed=seed))
            row.seeds.append(seed)
            if result.outcome == "complete" and result.best_val_acc is not None:
                row.accuracies.append(result.best_val_acc)
                on_message(
                    f"[{done}/{total}] trial {candidate.number}, seed {seed}: validation {result.best_val_acc:.2%}"
                )
            else:
                row.failures.append(f"seed {seed}: {result.outcome} ({result.reason})")
                on_message(
                    f"[{done}/{total}] trial {candidate.number}, seed {seed}: {result.outcome} ({result.reason})"
                )
        on_message(row.line())
        rows.append(row)
    # A candidate that failed any retraining ranks after every one that never failed.
    rows.sort(key=lambda row: (bool(row.failures) or row.mean is None, -(row.mean or 0.0), row.trial))
    if rows[0].mean is None:
        raise RuntimeError(
            f"every confirmation retraining failed: {'; '.join(f for row in rows for f in row.failures)}"
        )
    return rows
