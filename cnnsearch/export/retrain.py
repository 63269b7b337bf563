"""Owns `cnnsearch export`: retrain the chosen candidate on train+validation (or take the search's
weights), test it once, write and verify the model folder, and log the export in the run.

The test split is evaluated once, on the final network. Never prints: progress goes through
`on_message`. Reads finished trials from the study but never changes it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cnnsearch.data.device import (
    full_train_device_data,
)
from cnnsearch.data.load import load_run_dataset, load_run_split
from cnnsearch.errors import UserError
from cnnsearch.export.choose import (
    ConfirmationRow,
    _Candidate,
    _candidate,
    _candidates,
    _confirm,
    choose_among,
    retrainable_tie,
)
from cnnsearch.export.formats import VERIFY_IMAGES
from cnnsearch.export.model_files import (
    _cpu_eval,
    _model_meta,
    _write_model_folder,
)
from cnnsearch.export.options import DEFAULT_CHOICE, FORMATS, check_export_options, check_out_folder
from cnnsearch.export.schedule import (
    FinalPacer,
    FinalProgress,
    last_resort_schedule,
    schedule_for_trial,
    schedule_or_none,
)
from cnnsearch.export.search_weights import readable_weights, search_weights
from cnnsearch.export.testset import check_test_share_unseen, measure_test_accuracy
from cnnsearch.run.folder import RunDir, RunInfo, write_atomic
from cnnsearch.train.loop import resolve_device, train_candidate
from cnnsearch.train.result import TrialControl
from cnnsearch.words import count

EXPORTS_FILE = "exports.json"  # in the run folder: one entry per export, for the report


def ignore_message(message: str) -> None:
    pass


@dataclass
class ExportResult:
    """What an export (or a fine-tune) wrote and measured."""

    out: Path
    files: list[Path]  # in the order written, model.json last
    compact: str
    test_accuracy: float
    test_size: int
    verification: dict[str, float]  # format -> largest |logit difference| from the PyTorch model
    trial: int | None = None  # None for a fine-tuned model
    run: str | None = None
    val_accuracy: float | None = None
    retrain_epochs: int | None = None  # None: the search's weights were exported as they were
    train_images: int = 0
    seed: int = 0
    confirmation: list[ConfirmationRow] = field(default_factory=list)
    finetuned_from: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # model.json as written
    schedule: str = ""  # why the final training ran its epochs, e.g. "3x the search's 8 epochs"
    chosen_because: str = ""  # export's choice among the trials, e.g. "trial 7: tied with the best ..."

    def summary_lines(self) -> list[str]:
        lines = [f"chose {self.chosen_because}"] if self.chosen_because else []
        if self.finetuned_from is not None:
            lines.append(f"fine-tuned {self.finetuned_from} on {self.meta.get('data')}: {self.compact}")
        else:
            lines.append(f"trial {self.trial} {self.compact}")
        if self.confirmation:
            lines.append(f"chosen by mean validation accuracy over {count(len(self.confirmation), 'candidate')}:")
            lines += [f"  {row.line()}" for row in self.confirmation]
        if self.finetuned_from is not None:
            lines.append(
                f"fine-tuned {count(self.retrain_epochs, 'epoch')} on {self.train_images} images, seed {self.seed}"
                + (f"; validation accuracy {self.val_accuracy:.2%}" if self.val_accuracy is not None else "")
            )
        elif self.retrain_epochs is not None:
            lines.append(
                f"final training: {count(self.retrain_epochs, 'epoch')} ({self.schedule}) on train+validation "
                f"({self.train_images} images), seed {self.seed}"
            )
        else:
            lines.append(f"the search's weights, not retrained ({self.train_images} training images, seed {self.seed})")
        if self.val_accuracy is not None and self.finetuned_from is None:
            lines.append(
                f"search validation accuracy {self.val_accuracy:.2%} -> final test accuracy {self.test_accuracy:.2%} "
                f"on {self.test_size} images (evaluated once)"
            )
        else:
            lines.append(f"test accuracy {self.test_accuracy:.2%} on {self.test_size} images (evaluated once)")
        for name, diff in self.verification.items():
            lines.append(f"{name}: max |diff| {diff:.2g} ✓")
        lines.append("wrote " + ", ".join(str(path) for path in self.files))
        return lines


def export_run(
    run: RunDir,
    *,
    out: Path,
    trial: str = "best",
    retrain_epochs: int | None = None,
    final_budget_s: float | None = None,
    formats: tuple[str, ...] = FORMATS,
    top: int | None = None,
    seeds: int = 3,
    no_retrain: bool = False,
    force: bool = False,
    device: str = "auto",
    on_message: Callable[[str], None] = ignore_message,
    on_progress: Callable[[FinalProgress], None] | None = None,
    weights_when_short: bool = False,
    choose: str = DEFAULT_CHOICE,
) -> ExportResult:
    """Retrain the chosen trial on train+validation, test it once, write and verify model files.

    `trial` is "best" (highest validation accuracy) or a trial number. The final training runs
    `retrain_epochs` epochs, or as many as fit `final_budget_s`, or by default 3x the search's
    (see `export.schedule`); `on_progress` hears of every epoch. `weights_when_short` (search
    --export): when `final_budget_s` fits fewer epochs than the search trained, export the
    search's weights of the trial instead (when kept), as they had the longer schedule. With no
    trial named and no `top`, `choose` picks (export.options.CHOICES: by default the best
    validation accuracy; cheapest-tied, the cheapest of the trials tied with it). `top` first retrains the
    `top` best candidates `seeds` times each on the training split and picks the best mean
    validation accuracy. `no_retrain` exports the weights the search kept instead.
    Raises UserError for every bad argument before anything trains or is written.
    """
    called = time.monotonic()  # final_budget_s counts from here (from the end of a --top confirmation)
    info = run.read_info()
    out = Path(out)
    number, chosen_formats = check_export_options(
        trial,
        formats=formats,
        retrain_epochs=retrain_epochs,
        final_budget_s=final_budget_s,
        top=top,
        seeds=seeds,
        no_retrain=no_retrain,
        choose=choose,
    )
    check_out_folder(out, force=force)
    study = run.load_study(info)
    trials = study.get_trials(deepcopy=False)
    candidates = _candidates(trials)
    because = ""  # why `chosen` was chosen, when export chose it
    choice = None  # export's own choice among the trials, when it made one
    if number is None:
        if not candidates:
            raise UserError(
                f"run {run.name!r} has no finished trial to export yet; let the search finish at least one "
                f"(cnnsearch search --name {run.name})"
            )
        chosen = candidates[0]  # --top: the best, then confirmed over seeds
        if top is None:
            choice = choose_among(run, info, candidates, rule=choose)
            chosen, because = choice.chosen, choice.line()
    else:
        chosen = _candidate(run, trials, number)
    if no_retrain:
        _check_weights(run, info, chosen)
    torch_device = resolve_device(device)

    dataset = load_run_dataset(info, consequence="export would test on images the search may have seen")
    check_test_share_unseen(dataset, run=run.name)
    if no_retrain or top is not None:  # both use the search's training split; checked before any training
        need = "export the search's weights, or drop --no-retrain" if no_retrain else "confirm with --top"
        load_run_split(run, info, dataset, fix=f"restore it to {need}")
    confirmation: list[ConfirmationRow] = []
    if top is not None:
        confirmation = _confirm(
            run, info, dataset, candidates, top=top, seeds=seeds, device=torch_device, on_message=on_message
        )
        by_number = {candidate.number: candidate for candidate in candidates}
        chosen = by_number[confirmation[0].trial]
        on_message(f"chose trial {chosen.number} by mean validation accuracy")
        called = time.monotonic()  # --final-budget is the final training's, not the confirmation's

    schedule = None
    replans: list[list[int]] = []
    cpu_threads = torch.get_num_threads() if torch_device.type == "cpu" else None  # the final training's
    if not no_retrain:
        pool = int(info.split_sizes.get("train") or 0) + int(info.split_sizes.get("val") or 0)
        try:
            schedule = schedule_for_trial(info, trials, chosen, retrain_epochs, final_budget_s, pool, cpu_threads)
        except UserError:
            if not weights_when_short:
                raise
        short = schedule is None or schedule.epochs < chosen.arch.train.epochs
        if weights_when_short and short and choice is not None:
            # A tied trial the time left can train properly beats the best's search weights.
            swap = retrainable_tie(
                choice, lambda c: schedule_or_none(info, trials, c, final_budget_s, pool, cpu_threads)
            )
            if swap is not None:
                chosen, schedule, because = swap
                short = False
        if (
            weights_when_short
            and short
            and readable_weights(run.weights_file(chosen.weights_trial), chosen.arch.canonical_hash())
        ):
            no_retrain = True
            on_message(
                f"the time left fits fewer epochs than the search's {chosen.arch.train.epochs}: "
                f"exporting the search's weights of trial {chosen.number}"
            )
        elif schedule is None:
            schedule = last_resort_schedule(info, trials, chosen, final_budget_s, pool, cpu_threads)
    if no_retrain:
        net, mean, std, train_images, weights_epoch = search_weights(run, dataset, chosen)
        arch, epochs, why = chosen.arch, None, ""
        on_message(f"loaded the search's weights of trial {chosen.number} (after epoch {weights_epoch})")
    else:
        assert schedule is not None  # set above whenever retraining
        full = full_train_device_data(dataset, torch_device)
        train_images = len(full.train_y)
        epochs, why = schedule.epochs, schedule.why
        arch = chosen.arch.with_epochs(epochs)
        predicted = f", ~{schedule.predicted_s / 60:.1f} min" if schedule.predicted_s is not None else ""
        on_message(
            f"final training of trial {chosen.number}: {count(epochs, 'epoch')} ({schedule.why}{predicted}) on "
            f"train+validation ({train_images} images), seed {chosen.seed}"
        )
        deadline = None if final_budget_s is None else called + final_budget_s
        train = arch.train
        warmup = 0.0 if train.schedule == "constant" else train.warmup
        pacer = FinalPacer(schedule, deadline=deadline, on_progress=on_progress, warmup=warmup)
        # validate=False: full.val_x is the TEST split, which nothing may look at during training.
        control = TrialControl(
            seed=chosen.seed,
            validate=False,
            on_epoch_end=pacer.on_epoch_end,
            replan=pacer.replan,
            max_epochs=schedule.cap,
            on_train_start=pacer.restart,
        )
        result = train_candidate(arch, full, control=control)
        mean, std = full.mean.cpu().tolist(), full.std.cpu().tolist()
        del full
        kept = weights_when_short and readable_weights(
            run.weights_file(chosen.weights_trial), chosen.arch.canonical_hash()
        )
        # Cut below the search's epochs (a pace far slower than predicted: FinalPacer's bound).
        short = result.outcome == "complete" and result.epochs_run < chosen.arch.train.epochs
        if result.outcome != "complete" or result.model is None or (short and kept):  # diverged, OOM, ...
            failed = f"the final training of trial {chosen.number} ended {result.outcome}: {result.reason}"
            if short:
                failed = (
                    f"the final training of trial {chosen.number} had time for {count(result.epochs_run, 'epoch')} only"
                )
            if not kept:
                raise UserError(
                    f"{failed}; export the search's weights with --no-retrain, or try another --final-epochs"
                )
            on_message(f"{failed}; exporting the search's weights of trial {chosen.number} instead")
            no_retrain = True  # search --export: the kept weights rather than nothing after the whole search
            net, mean, std, train_images, weights_epoch = search_weights(run, dataset, chosen)
            arch, epochs, why = chosen.arch, None, ""
        else:
            replans = [[epoch, before, after] for epoch, before, after, _ in pacer.changes]
            replanned = pacer.note()
            if replanned:
                on_message(f"final training {replanned}")
                epochs, why = result.epochs_run, f"{why}; {replanned}"
                arch = chosen.arch.with_epochs(epochs)
            net, weights_epoch = result.model, epochs

    net = _cpu_eval(net)
    test_accuracy = measure_test_accuracy(net, dataset, mean, std)
    on_message(f"test accuracy {test_accuracy:.2%} on {len(dataset.test_labels)} images (evaluated once)")

    meta = {
        **_model_meta(arch, dataset, mean=mean, std=std, test_accuracy=test_accuracy),
        "val_accuracy": chosen.val_acc,  # the search's: best validation accuracy of the chosen trial
        "search_epochs": chosen.arch.train.epochs,
        "final_schedule": why,
        # The kept weights are those of the trial's best epoch.
        "weights_val_accuracy": chosen.val_acc if no_retrain else None,
        "run": run.name,
        "data": info.data,
        "trial": chosen.number,
        "retrained": not no_retrain,
        "retrain_epochs": epochs,
        "weights_epoch": weights_epoch,
        "train_images": train_images,
        "seed": chosen.seed,
        "confirmation": [row.to_dict() for row in confirmation],
        "chosen_because": because,
        # Each re-plan of a budget-fitted final training: [after epoch, epochs before, after]. The
        # one-cycle schedule is a share of the planned steps, so these (and the seed) are what it ran.
        "replans": replans,
    }
    files, verification = _write_model_folder(
        out,
        net=net,
        arch=arch,
        input_shape=dataset.input_shape,
        class_names=dataset.class_names,
        mean=mean,
        std=std,
        verify_images=dataset.test_images[:VERIFY_IMAGES],
        formats=chosen_formats,
        meta=meta,
        on_message=on_message,
    )
    _append_export_record(
        run,
        {
            "out": str(out.resolve()),
            "trial": chosen.number,
            "compact": arch.compact(),
            "test_accuracy": test_accuracy,
            "test_size": len(dataset.test_labels),
            "val_accuracy": chosen.val_acc,
            "retrained": not no_retrain,
            "retrain_epochs": epochs,
            "seed": chosen.seed,
            "final_schedule": why,
            "replans": replans,
            "formats": list(chosen_formats),
            "created": meta["created"],
        },
    )
    return ExportResult(
        out=out,
        files=files,
        compact=arch.compact(),
        test_accuracy=test_accuracy,
        test_size=len(dataset.test_labels),
        verification=verification,
        trial=chosen.number,
        run=run.name,
        val_accuracy=chosen.val_acc,
        retrain_epochs=epochs,
        train_images=train_images,
        seed=chosen.seed,
        confirmation=confirmation,
        meta=meta,
        schedule=why,
        chosen_because=because,
    )


def _check_weights(run: RunDir, info: RunInfo, candidate: _Candidate) -> None:
    if not run.weights_file(candidate.weights_trial).is_file():
        raise UserError(
            f"trial {candidate.number} of run {run.name!r} has no saved weights (the search keeps those of the "
            f"best {info.keep_weights} trials only); drop --no-retrain to retrain it"
        )


def _append_export_record(run: RunDir, record: dict[str, Any]) -> None:
    """Add one entry to runs/<name>/exports.json, so the report can show exported models."""
    path = run.path / EXPORTS_FILE
    records: list[Any] = []
    if path.is_file():
        try:
            loaded = json.loads(path.read_text())
            records = loaded if isinstance(loaded, list) else []
        except (OSError, json.JSONDecodeError):
            records = []  # a damaged log must not fail an export that has already succeeded
    records.append(record)
    write_atomic(path, json.dumps(records, indent=2) + "\n")
