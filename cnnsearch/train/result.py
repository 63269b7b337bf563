"""Owns the types of one training: what the caller controls (`TrialControl`), what comes back
(`TrialResult`, whose `outcome` is a name of `cnnsearch.outcomes`) and the exception that ends
a training early with an outcome (`StopTrial`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from cnnsearch.train.plan import DevicePlan


@dataclass
class TrialResult:
    """What one training of one candidate produced; everything the leaderboard shows."""

    outcome: str  # a name of cnnsearch.outcomes.OUTCOMES: "complete", "pruned", "nan", ...
    reason: str = ""
    val_acc: list[float] = field(default_factory=list)  # per finished epoch
    train_loss: list[float] = field(default_factory=list)  # mean per finished epoch
    epochs_run: int = 0
    train_seconds: float = 0.0
    images_per_sec: float = 0.0
    params: int = 0
    flops: int = 0
    latency_ms: float | None = None  # inference of one batch on the training device; None: not measured
    micro_batch: int = 0  # < batch_size when OOM forced gradient accumulation
    model: nn.Module | None = field(default=None, repr=False)  # trained net, on CPU
    best_state: dict | None = field(default=None, repr=False)  # state_dict of the best epoch, on CPU
    val_correct: str = field(default="", repr=False)  # the best epoch's per-image outcomes (evaluate.pack_outcomes)

    @property
    def best_val_acc(self) -> float | None:
        return max(self.val_acc) if self.val_acc else None

    @property
    def final_val_acc(self) -> float | None:
        return self.val_acc[-1] if self.val_acc else None

    @property
    def best_epoch(self) -> int | None:
        return self.val_acc.index(max(self.val_acc)) + 1 if self.val_acc else None

    def metrics(self) -> dict[str, object]:
        """The JSON-ready metrics stored on the trial and in trials/<n>.json."""
        return {
            "outcome": self.outcome,
            "reason": self.reason,
            "val_acc": self.val_acc,
            "train_loss": self.train_loss,
            "best_val_acc": self.best_val_acc,
            "final_val_acc": self.final_val_acc,
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "train_seconds": round(self.train_seconds, 3),
            "images_per_sec": round(self.images_per_sec, 1),
            "params": self.params,
            "flops": self.flops,
            "latency_ms": round(self.latency_ms, 4) if self.latency_ms is not None else None,
            "micro_batch": self.micro_batch,
            "val_correct": self.val_correct,
        }


class StopTrial(Exception):
    """Raised inside the training loop to end a trial early with an outcome."""

    def __init__(self, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


@dataclass
class TrialControl:
    """How the caller steers one training: budgets, pruning, interruption, checkpoints."""

    seed: int = 0
    time_limit_s: float | None = None  # this trial's budget, seconds
    deadline: float | None = None  # time.monotonic() at which the whole search must stop
    should_stop: Callable[[], bool] | None = None  # e.g. Ctrl-C was pressed
    epoch_callback: Callable[[int, float], bool | str] | None = None  # (epoch, val_acc) -> prune? (or why)
    on_measured: Callable[[dict[str, float]], None] | None = None  # params, flops, latency_ms before epoch 1
    # A resume: the validation accuracy of each epoch its checkpoint holds (epochs 1..k), before epoch k+1.
    on_resume: Callable[[list[float]], None] | None = None
    checkpoint_path: Path | None = None  # last finished epoch, to resume an interrupted trial
    checkpoint_every_s: float = 0.0  # seconds of training between two resume checkpoints; 0: every epoch
    measure_latency: bool = True  # False when no objective needs it: it costs ~3% of a short trial
    validate: bool = True  # False for a final retrain: no validation split is used
    on_epoch_end: Callable[[int, float], None] | None = None  # (epoch, mean training loss): a progress bar
    # (epoch, seconds of training so far) -> the epochs to run in all, up to max_epochs: the final
    # training's re-plan at its measured pace (export.schedule.FinalPacer); called before on_epoch_end.
    replan: Callable[[int, float], int] | None = None
    max_epochs: int | None = None  # the most epochs `replan` may ask for
    on_train_start: Callable[[], None] | None = None  # set-up done, the first step next (again after an OOM retry)
    plan: DevicePlan | None = None  # channels-last, autocast, first micro-batch; None: the device's (train.plan)
