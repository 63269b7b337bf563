"""Owns one worker of a search: ask the study for a candidate, train it, record its outcome.

Every finished trial is told to the study before the next one starts, and its record is
written atomically, so a run killed at any moment stays readable. A trial stopped by Ctrl-C,
the search deadline or a dead worker is re-run from its last finished epoch; one whose
remaining epochs cannot finish before the deadline, at its measured pace, is pruned at once.
A candidate identical to an earlier one (same canonical hash) is a `duplicate` and is not
trained again (`dedup`).

Never prints: progress reaches the caller as `SearchEvent`s through a callback.
"""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
from collections import Counter
from collections.abc import Callable
from typing import Any

from cnnsearch.data.load import load_run_dataset, load_run_split
from cnnsearch.errors import DiskFull, RunFault
from cnnsearch.outcomes import TrialRecord, optuna_state, write_attrs
from cnnsearch.run.folder import RunDir, RunInfo, write_atomic
from cnnsearch.run.liveness import (
    HEARTBEAT_GRACE_S,
    HEARTBEAT_INTERVAL_S,
    Heartbeat,
    ask_lock,
    on_stale_trial,
    recover_dead_trials,
    requeue,
    requeue_refused,
    uses_rdb_heartbeat,
)
from cnnsearch.run.optuna_private import hyperband_first_rung, storage_of, stored_user_attrs, trial_id
from cnnsearch.run.storage import rdb_storage
from cnnsearch.search import strategies
from cnnsearch.search.budget import UNTRAINABLE_STREAK, BudgetGate
from cnnsearch.search.dedup import copied_from, duplicate_of
from cnnsearch.search.progress import SearchEvent, counted_trials
from cnnsearch.search.settings import DEFAULT_CHECKPOINT_EVERY_S
from cnnsearch.search.weights import keep_best_weights
from cnnsearch.space.flat import flat_dimensions, network_key, sample_flat
from cnnsearch.space.parse import SearchSpace
from cnnsearch.space.sample import sample_architecture


class WorkerLoop:
    """One worker: asks for trials and trains them until the total, the deadline or a stop."""

    def __init__(
        self,
        run: RunDir,
        info: RunInfo,
        space: SearchSpace,
        *,
        target: int,
        deadline: float | None = None,
        device: str = "auto",
        worker_index: int = 0,
        on_event: Callable[[SearchEvent], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        checkpoint_every_s: float = DEFAULT_CHECKPOINT_EVERY_S,
        budget_s: float | None = None,
    ) -> None:
        self.run = run
        self.info = info
        self.space = space
        self.target = target
        self.deadline = deadline
        self.device_name = device
        self.worker_index = worker_index
        self.on_event = on_event or (lambda event: None)
        self.should_stop = should_stop or (lambda: False)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.interrupted = False
        self.checkpoint_every_s = checkpoint_every_s  # training seconds a kill may lose at most
        self.untrainable: Counter[str] = Counter()  # reasons of the current run of untrainable candidates
        # The whole search budget (--timeout), for the cost model's share rule; default: the deadline's.
        budget_s = budget_s if budget_s is not None or deadline is None else deadline - time.monotonic()
        self.gate = BudgetGate(pruner=info.pruner, objectives=len(info.objective), budget_s=budget_s)

    def _emit(self, **fields: Any) -> None:
        self.on_event(SearchEvent(worker=self.worker, **fields))

    def open_study(self) -> Any:
        import optuna

        strategies.quiet_optuna()
        info = self.info
        if info.storage == "journal":
            storage = self.run.open_storage(info)
        else:
            storage = rdb_storage(
                info.storage,
                heartbeat_interval=HEARTBEAT_INTERVAL_S,
                grace_period=HEARTBEAT_GRACE_S,
                failed_trial_callback=on_stale_trial,
            )
        epochs = info.epochs or self.space.dimension("train", "epochs").value or 10
        # A resumed run must not replay the first session's random proposals (they would all
        # be duplicates): the sampler's seed also depends on how many trials exist already.
        history = len(optuna.load_study(study_name=info.name, storage=storage).get_trials(deepcopy=False))
        flat = flat_dimensions(self.space, epochs=info.epochs) if strategies.FLAT_ENCODING.get(info.sampler) else None
        return optuna.load_study(
            study_name=info.name,
            storage=storage,
            sampler=strategies.make_sampler(
                info.sampler,
                info.seed + 104729 * history,
                multi_objective=len(info.objective) > 1,
                worker_index=self.worker_index,
                dimensions=flat,
                same_network=None if flat is None else network_key(self.space, epochs=info.epochs),
            ),
            pruner=strategies.make_pruner(info.pruner, epochs if isinstance(epochs, int) else 10),
        )

    def load_data(self) -> Any:
        import torch

        from cnnsearch.data.device import to_device
        from cnnsearch.train.loop import resolve_device
        from cnnsearch.train.plan import device_label

        info = self.info
        dataset = load_run_dataset(info, consequence="its saved split would pick other images")
        split = load_run_split(
            self.run, info, dataset, fix=f"restore it to search run {info.name!r} on the images it was searched on"
        )
        self.device = resolve_device(self.device_name)
        self.device_label = device_label(self.device)  # with its plan: "cpu (channels-last, bf16 autocast)"
        threads = torch.get_num_threads() if self.device.type == "cpu" else None  # as the trials record it
        self.gate.calibration = {"device": self.device_label, "worker": self.worker, "threads": threads}
        return to_device(dataset, split, self.device)

    def run_loop(self) -> None:
        with strategies.optuna_log_to(self.run.log_file):
            self._loop()

    def _loop(self) -> None:
        import optuna

        study = self.open_study()
        data = self.load_data()
        with ask_lock(self.run, self.info.storage):
            requeue_refused(study, self.info.session_started())
        while not self.should_stop():
            if self.deadline is not None and time.monotonic() >= self.deadline:
                break
            with ask_lock(self.run, self.info.storage):
                recover_dead_trials(self.run, study)
                if uses_rdb_heartbeat(storage_of(study)):
                    optuna.storages.fail_stale_trials(study)
                running = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))
                if len(counted_trials(study)) + running >= self.target:
                    if running == 0:
                        break
                    trial = None
                else:
                    trial = study.ask()
            if trial is None:  # others are finishing the last trials; wait for them
                time.sleep(1.0)
                continue
            with Heartbeat(self.run, study, trial):  # from the ask until the trial is told and its files written
                self.run_trial(study, trial, data)
            if self.interrupted:
                break
            if sum(self.untrainable.values()) >= UNTRAINABLE_STREAK:
                from cnnsearch.space.inspect import untrainable_error

                raise untrainable_error(self.info.name, self.info.data, self.untrainable, UNTRAINABLE_STREAK)
            if self.gate.stop_message():
                self._emit(kind="message", text=self.gate.stop_message())
                break

    def run_trial(self, study: Any, trial: Any, data: Any) -> None:
        from cnnsearch.train.loop import train_candidate
        from cnnsearch.train.result import TrialControl

        try:
            # Flat: every parameter the space has is drawn, the network built from the active ones.
            sample = sample_flat if strategies.FLAT_ENCODING.get(self.info.sampler) else sample_architecture
            arch = sample(self.space, trial, epochs=self.info.epochs)
        except Exception as error:  # a sampler bug must not stop the search
            self._finish(study, trial, "error", f"sampling failed: {error}", {})
            return
        queued = TrialRecord.of(trial)
        origin = trial.number if queued.origin is None else queued.origin
        # A starter trains to the end (budget rules still apply): a strong reference at every rung.
        prunable = queued.starter is None
        seed = self.info.seed + origin
        write_attrs(
            trial,
            {
                "arch": arch.to_dict(),
                "compact": arch.compact(),
                "hash": arch.canonical_hash(),
                "seed": seed,
                "origin": origin,
                "worker": self.worker,
                "device": self.device_label,
            },
        )
        earlier = duplicate_of(study, trial, arch.canonical_hash())
        if earlier is not None:
            self._finish_duplicate(study, trial, earlier)
            return

        if not self._within_budget(study, trial, arch, data, queued):
            return

        costs: dict[str, float] = {}
        started: list[float] = []  # when the training steps began (after all set-up), for the epochs' pace
        resumed_at = [0]  # the epochs a resumed trial's checkpoint already held

        def on_measured(measured: dict[str, float]) -> None:
            costs.update(measured)
            write_attrs(trial, measured)

        def on_epoch(epoch: int, accuracy: float) -> bool | str:
            self._emit(
                kind="epoch",
                trial=trial.number,
                compact=arch.compact(),
                epoch=epoch,
                epochs=arch.train.epochs,
                val_acc=accuracy,
            )
            write_attrs(trial, {"current_epoch": epoch, "current_val_acc": accuracy})
            # After the last epoch nothing is left to save: a trial that ran every epoch is
            # complete, whatever a pruner would say (with --epochs 1 its first rung is the last).
            last = epoch >= arch.train.epochs
            too_slow = ""
            if started:  # measured: can the budget afford the rest, and can the time left hold it?
                too_slow = self.gate.judge_epoch(
                    time.monotonic() - started[0],
                    epoch=epoch,
                    epochs_done=epoch - resumed_at[0],
                    epochs=arch.train.epochs,
                    trials=lambda: study.get_trials(deepcopy=False),
                    data=data,
                    time_left_s=None if self.deadline is None else self.deadline - time.monotonic(),
                )
            if len(self.info.objective) > 1:
                if too_slow or self.info.pruner == "none" or last or not prunable:
                    return too_slow or False
                cost_key = strategies.COST_ATTRS[self.info.objective[1]]
                return (
                    strategies.pareto_prune(study, trial.number, epoch, accuracy, cost_key, costs.get(cost_key))
                    or False
                )
            trial.report(accuracy, epoch)
            decision = not last and trial.should_prune()  # asked even for a starter: ASHA records rungs when asked
            return too_slow or (prunable and decision)

        def on_resume(val_acc: list[float]) -> None:
            # A re-run continues its origin's checkpoint: give the new trial that checkpoint's
            # epochs, or the pruner would file epoch k's accuracy under the first rung.
            resumed_at[0] = len(val_acc)
            if len(self.info.objective) == 1:  # Optuna keeps no intermediate values for several objectives
                for epoch, accuracy in enumerate(val_acc, start=1):
                    trial.report(accuracy, epoch)

        checkpoint = self.run.checkpoint_file(f"trial_{origin}")
        control = TrialControl(
            seed=seed,
            time_limit_s=self.info.trial_timeout,
            deadline=self.deadline,
            should_stop=self.should_stop,
            epoch_callback=on_epoch,
            on_resume=on_resume,
            on_measured=on_measured,
            on_train_start=lambda: started.insert(0, time.monotonic()),  # an OOM retry starts the clock again
            checkpoint_path=checkpoint,
            checkpoint_every_s=self.checkpoint_every_s,
            measure_latency="latency" in self.info.objective,  # else ~3% of a short trial for a column
        )
        try:
            result = train_candidate(
                arch, data, control=control, max_params=self.space.max_params, max_flops=self.space.max_flops
            )
        except RunFault:  # the disk, not the candidate: stop; a resume re-runs it from its checkpoint
            raise
        except Exception as error:  # a real bug: FAIL, recorded, and the search goes on
            self._finish(
                study, trial, "error", f"{type(error).__name__}: {error}", {"traceback": traceback.format_exc(limit=6)}
            )
            return
        metrics = result.metrics()
        if result.outcome == "interrupted":
            # Ctrl-C ends the command with 130; the search deadline is a normal end.
            self.interrupted = self.should_stop()
            self._finish(study, trial, "interrupted", result.reason, metrics)
            with ask_lock(self.run, self.info.storage):  # against another worker's sweep (liveness.requeue)
                requeue(study, storage_of(study).get_trial(trial_id(trial)))
            return
        # The result first, the weights after: a disk too full for the weights keeps the result.
        self._finish(study, trial, result.outcome, result.reason, metrics)
        checkpoint.unlink(missing_ok=True)
        keep_best_weights(self.run, trial.number, result, keep=self.info.keep_weights, network=arch.canonical_hash())

    def _within_budget(self, study: Any, trial: Any, arch: Any, data: Any, queued: TrialRecord) -> bool:
        """Predict the candidate's epoch time (recorded on the trial); False, after ending it as
        too_slow, when the budget cannot afford it; True, after telling the view, when it may train.
        A re-run is judged on the epochs its origin's checkpoint does not hold yet."""
        from cnnsearch.train.checkpoint import checkpoint_epochs

        resumes = queued.resume_of is not None and queued.origin is not None
        checkpoint = self.run.checkpoint_file(f"trial_{queued.origin}")
        done = checkpoint_epochs(checkpoint, arch.canonical_hash()) if resumes else 0
        time_left = None if self.deadline is None else self.deadline - time.monotonic()
        rung = hyperband_first_rung(study, trial)  # None but for Hyperband, whose brackets start later
        cost = self.gate.judge(
            arch, study.get_trials(deepcopy=False), data, time_left_s=time_left, epochs_done=done, first_rung=rung
        )
        if cost.epoch_seconds is not None:
            write_attrs(trial, {"predicted_epoch_s": round(cost.epoch_seconds, 4)})
        if cost.refused:
            self._finish(study, trial, "too_slow", cost.refused, cost.measured)
            return False
        self._emit(
            kind="trial_start",
            trial=trial.number,
            compact=arch.compact(),
            epochs=arch.train.epochs,
            device=self.device_label,
            predicted_s=None if cost.epoch_seconds is None else cost.epoch_seconds * (arch.train.epochs - done),
        )
        return True

    def _finish_duplicate(self, study: Any, trial: Any, earlier: Any) -> None:
        import optuna

        record = TrialRecord.of(earlier)
        copied, reason = copied_from(earlier)
        if earlier.state == optuna.trial.TrialState.COMPLETE:  # its results, and trials/<n>.json like any trial
            self._finish(study, trial, "duplicate", reason, copied)
        else:
            self._finish(study, trial, record.outcome or "pruned", reason + f" ({record.reason})", copied)

    def _finish(self, study: Any, trial: Any, outcome: str, reason: str, metrics: dict[str, Any]) -> None:
        """Record the outcome on the trial and in trials/<n>.json, then tell the study."""
        metrics = {**metrics, "outcome": outcome, "reason": reason}
        if outcome in ("infeasible", "over_budget"):
            from cnnsearch.space.inspect import generic_reason

            copied = reason.startswith("same network") and reason.endswith(")")  # a duplicate: the earlier reason
            self.untrainable[generic_reason(reason[reason.index("(") + 1 : -1] if copied else reason)] += 1
        elif outcome != "interrupted":
            self.untrainable.clear()
        stored = stored_user_attrs(trial)  # read-only peek: no deep copy per key
        write_attrs(trial, metrics, stored=stored)  # only what changed: each write is a journal record
        record = {"trial": trial.number, "arch": stored.get("arch"), "params_sampled": trial.params, **metrics}
        try:
            write_atomic(self.run.trial_file(trial.number), json.dumps(record, indent=2, default=str) + "\n")
        except DiskFull:  # trials/<n>.json is a copy for people: the study still gets the result
            self._tell(study, trial, metrics)
            raise
        self._tell(study, trial, metrics)
        self._emit(
            kind="trial_end",
            trial=trial.number,
            outcome=outcome,
            reason=reason,
            best_val_acc=metrics.get("best_val_acc"),
            params=metrics.get("params") or 0,
            seconds=metrics.get("train_seconds") or 0.0,
            compact=str(stored.get("compact", "")),
            finished_total=len(counted_trials(study)),
        )

    def _tell(self, study: Any, trial: Any, metrics: dict[str, Any]) -> None:
        import optuna

        state = optuna_state(metrics["outcome"])
        if state == "PRUNED":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif state == "FAIL" or metrics.get("best_val_acc") is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, self._objective_values(metrics))

    def _objective_values(self, metrics: dict[str, Any]) -> float | list[float]:
        if len(self.info.objective) == 1:
            return float(metrics["best_val_acc"])
        return [float(metrics["best_val_acc"]), float(metrics[strategies.COST_ATTRS[self.info.objective[1]]])]
