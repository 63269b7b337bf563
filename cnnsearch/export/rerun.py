"""Owns `cnnsearch rerun`: training one trial again exactly as the search did (spec, split,
seed) and comparing its accuracy with the recorded one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cnnsearch.data.device import to_device
from cnnsearch.data.load import load_run_dataset, load_run_split
from cnnsearch.errors import UserError
from cnnsearch.outcomes import TrialRecord
from cnnsearch.run.folder import RunDir, find_trial
from cnnsearch.spec import Architecture
from cnnsearch.train.loop import resolve_device, train_candidate
from cnnsearch.train.result import TrialControl


@dataclass
class RerunResult:
    """A trial trained again from the run folder, against what the search recorded."""

    trial: int
    recorded: float  # best validation accuracy the search recorded
    reproduced: float | None  # the same over the same epochs now; None if the retraining failed
    seed: int
    compact: str
    outcome: str  # of the retraining: "complete", or e.g. "nan"
    reason: str = ""
    recorded_curve: list[float] = field(default_factory=list)
    reproduced_curve: list[float] = field(default_factory=list)
    source_trial: int | None = None  # for a duplicate: the trial whose training it copied

    @property
    def difference(self) -> float | None:
        """reproduced - recorded, in accuracy units (0.01 = one point)."""
        return None if self.reproduced is None else self.reproduced - self.recorded

    def summary(self) -> str:
        name = f"trial {self.trial}"
        if self.source_trial is not None:
            name += f" (a duplicate of trial {self.source_trial}, whose training was re-run)"
        if self.reproduced is None:
            return f"{name}: recorded {self.recorded:.2%}, the retraining ended {self.outcome}: {self.reason}"
        return (
            f"{name}: recorded {self.recorded:.2%}, reproduced {self.reproduced:.2%} "
            f"(difference {100 * self.difference:+.2f} points)"
        )


def rerun_trial(run: RunDir, number: int, *, device: str = "auto") -> RerunResult:
    """Train one trial again exactly as the search did (spec, split, seed) and compare accuracies.

    A trial the pruner stopped is re-run to the same epoch. Unknown trials, and trials without
    an architecture or a recorded accuracy, raise UserError.
    """
    info = run.read_info()
    study = run.load_study(info)
    trials = study.get_trials(deepcopy=False)
    trial = find_trial(run, trials, number)
    record = TrialRecord.of(trial)
    source_trial = record.duplicate_of
    if source_trial is not None:  # its accuracy was copied from the original: re-run that training
        record = TrialRecord.of(find_trial(run, trials, source_trial))
    if record.arch is None:
        raise UserError(f"trial {number} of run {run.name!r} has no recorded architecture; choose another trial")
    recorded = record.best_val_acc
    if recorded is None:
        outcome = record.outcome or trial.state.name.lower()
        raise UserError(
            f"trial {number} of run {run.name!r} ended {outcome} without a validation accuracy, so there is "
            f"nothing to reproduce; choose a trial that trained at least one epoch"
        )
    arch = Architecture.from_dict(record.arch)
    origin = record.origin if record.origin is not None else number
    seed = record.seed if record.seed is not None else info.seed + origin
    recorded_curve = list(record.val_acc)
    epochs_run = record.epochs_run or len(recorded_curve) or arch.train.epochs
    torch_device = resolve_device(device)

    dataset = load_run_dataset(info, consequence="the saved split would pick other images than the search trained on")
    split = load_run_split(run, info, dataset, fix="restore it to re-run a trial on the images the search trained on")
    data = to_device(dataset, split, torch_device)
    # Same schedule as the search (the arch's epochs); a pruned trial stops where it was stopped.
    stop_after = epochs_run if epochs_run < arch.train.epochs else None
    callback = (lambda epoch, accuracy: epoch >= stop_after) if stop_after else None
    result = train_candidate(arch, data, control=TrialControl(seed=seed, epoch_callback=callback))
    curve = list(result.val_acc[:epochs_run])
    stopped_as_recorded = result.outcome == "complete" or (stop_after is not None and result.outcome == "pruned")
    reproduced = max(curve) if curve and stopped_as_recorded else None
    return RerunResult(
        trial=number,
        recorded=float(recorded),
        reproduced=reproduced,
        seed=seed,
        compact=arch.compact(),
        outcome=result.outcome,
        reason=result.reason,
        recorded_curve=recorded_curve,
        reproduced_curve=curve,
        source_trial=int(source_trial) if source_trial is not None else None,
    )
