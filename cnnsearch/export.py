"""Owns the end of a search: retrain the chosen candidate, test it once, write and verify the
model files, load them back, fine-tune an exported network on new data, and re-run one trial
to check that it reproduces.

An export folder describes itself:

    model.pt     {"architecture", "state_dict", "input_shape", "class_names", "mean", "std"};
                 loads with torch.load(weights_only=True) and rebuilds with build_model
    model.ts     TorchScript of the eval-mode CPU network
    model.onnx   ONNX with a dynamic batch axis (input "input", output "logits")
    model.json   architecture, preprocessing, test accuracy, verification, provenance

Every model file takes NORMALISED float32 (N, C, H, W) input, (x / 255 - mean) / std with the
mean and std of the images the network was trained on, and returns logits.

The test split takes no part in any choice: candidates are chosen (and confirmed) on the
validation split; the test split is evaluated once, on the final network. Never prints:
progress goes through `on_message`.

Knows model, spec, train, data and the run folder; reads finished trials from the study but
never changes it.
"""
from __future__ import annotations

import json
import logging
import math
import os
import pickle
import statistics
import tempfile
import warnings
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from cnnsearch.data import (
    Dataset,
    DeviceData,
    dataset_fingerprint,
    full_train_device_data,
    load_dataset,
    load_dataset_cached,
    load_split,
    make_split,
    normalization_stats,
    subsample,
    to_channels,
    to_device,
)
from cnnsearch.errors import InfeasibleArchitecture, UserError
from cnnsearch.model import CandidateNet, build_model
from cnnsearch.rundir import RunDir, RunInfo, find_trial, package_versions, write_atomic
from cnnsearch.spec import Architecture
from cnnsearch.train import TrialControl, evaluate, resolve_device, train_candidate

FORMATS = ("onnx", "torchscript", "pt")
FILE_NAMES = {"onnx": "model.onnx", "torchscript": "model.ts", "pt": "model.pt"}
META_FILE = "model.json"
EXPORTS_FILE = "exports.json"  # in the run folder: one entry per export, for the report
# Files a previous export may have left; --force replaces these and nothing else.
_OWN_FILES = (*FILE_NAMES.values(), "model.onnx.data", META_FILE)
INPUT_DESCRIPTION = "float32 NCHW normalised as (x/255 - mean)/std"
ONNX_INPUT, ONNX_OUTPUT = "input", "logits"
MODEL_FORMAT_VERSION = 1  # of model.pt and model.json; bump when a key changes meaning
VERIFY_IMAGES = 64  # real test images run through every exported file
VERIFY_TOLERANCE = 1e-3  # largest |logit difference| accepted between PyTorch and an exported file
CONFIRM_SEED_STRIDE = 1000  # confirmation seed k of trial n: run seed + 1000 * k + n
FINETUNE_MIN_STEPS = 8  # optimiser steps per fine-tuning epoch that the batch size is lowered for
FINETUNE_MIN_BATCH = 8  # images per step, at least: smaller batches make batch-norm statistics noisy
# What `_candidate` says of a trial that did not finish: "trial 3 of run 'x' <phrase> (reason), ...".
_UNFINISHED_PHRASES = {
    "interrupted": "was interrupted",
    "pruned": "was pruned",
    "infeasible": "could not be built for the data",
    "over_budget": "was over the budget",
    "oom": "ran out of device memory",
    "nan": "diverged (NaN loss)",
    "timeout": "timed out",
    "error": "failed with an error",
    "failed": "failed",
    "running": "is still running",
    "waiting": "is waiting to run",
}


def _quiet(message: str) -> None:
    pass


# ---- results --------------------------------------------------------------------------------------
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
        text = (f"trial {self.trial} {self.compact}: {self.mean:.2%} ± {100 * self.sd:.2f} points over "
                f"{len(self.accuracies)} seed(s) (search {self.search_val_acc:.2%})")
        if self.failures:
            text += f"; {len(self.failures)} failed: {'; '.join(self.failures)}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "trial": self.trial, "compact": self.compact, "search_val_acc": self.search_val_acc,
            "seeds": self.seeds, "val_accuracies": self.accuracies, "mean": self.mean, "sd": self.sd,
            "failures": self.failures,
        }


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

    def summary_lines(self) -> list[str]:
        lines = []
        if self.finetuned_from is not None:
            lines.append(f"fine-tuned {self.finetuned_from} on {self.meta.get('data')}: {self.compact}")
        else:
            lines.append(f"trial {self.trial} {self.compact}")
        if self.confirmation:
            lines.append(f"chosen by mean validation accuracy over {len(self.confirmation)} candidate(s):")
            lines += [f"  {row.line()}" for row in self.confirmation]
        if self.finetuned_from is not None:
            lines.append(f"fine-tuned {self.retrain_epochs} epochs on {self.train_images} images, seed {self.seed}"
                         + (f"; validation accuracy {self.val_accuracy:.2%}" if self.val_accuracy is not None else ""))
        elif self.retrain_epochs is not None:
            lines.append(f"retrained {self.retrain_epochs} epochs on train+validation ({self.train_images} images), "
                         f"seed {self.seed}")
        else:
            lines.append(f"the search's weights, not retrained ({self.train_images} training images, seed {self.seed})")
        lines.append(f"test accuracy {self.test_accuracy:.2%} on {self.test_size} images (evaluated once)")
        for name, diff in self.verification.items():
            lines.append(f"{name}: max |diff| {diff:.2g} ✓")
        lines.append("wrote " + ", ".join(str(path) for path in self.files))
        return lines


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
        return (f"{name}: recorded {self.recorded:.2%}, reproduced {self.reproduced:.2%} "
                f"(difference {100 * self.difference:+.2f} points)")


@dataclass
class ExportedModel:
    """An exported network loaded back: ready for inference on normalised input."""

    net: CandidateNet  # eval mode, on the CPU
    arch: Architecture
    class_names: tuple[str, ...]
    input_shape: tuple[int, int, int]  # C, H, W
    mean: list[float]  # per channel, in [0, 1] units
    std: list[float]
    meta: dict[str, Any]  # model.json ({} when the folder has none)

    def normalize(self, images_uint8: torch.Tensor) -> torch.Tensor:
        return _normalize(images_uint8, self.mean, self.std)


# ---- export ---------------------------------------------------------------------------------------------
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


def export_run(
    run: RunDir,
    *,
    out: Path,
    trial: str = "best",
    retrain_epochs: int | None = None,
    formats: tuple[str, ...] = FORMATS,
    top: int | None = None,
    seeds: int = 3,
    no_retrain: bool = False,
    force: bool = False,
    device: str = "auto",
    on_message: Callable[[str], None] = _quiet,
) -> ExportResult:
    """Retrain the chosen trial on train+validation, test it once, write and verify model files.

    `trial` is "best" (highest validation accuracy) or a trial number. `top` first retrains the
    `top` best candidates `seeds` times each on the training split and picks the best mean
    validation accuracy. `no_retrain` exports the weights the search kept instead.
    Raises UserError for every bad argument before anything trains or is written.
    """
    info = run.read_info()
    out = Path(out)
    chosen_formats = _check_formats(formats)
    number = _parse_trial(trial)
    _check_export_options(number, retrain_epochs=retrain_epochs, top=top, seeds=seeds, no_retrain=no_retrain)
    _check_out(out, force=force)

    study = run.load_study(info)
    trials = study.get_trials(deepcopy=False)
    candidates = _candidates(trials)
    if number is None:
        if not candidates:
            raise UserError(
                f"run {run.name!r} has no finished trial to export yet; let the search finish at least one "
                f"(cnnsearch search --name {run.name})"
            )
        chosen = candidates[0]
    else:
        chosen = _candidate(run, trials, number)
    if no_retrain:
        _check_weights(run, info, chosen)
    torch_device = resolve_device(device)

    dataset = _run_dataset(info, consequence="export would test on images the search may have seen")
    confirmation: list[ConfirmationRow] = []
    if top is not None:
        confirmation = _confirm(run, info, dataset, candidates, top=top, seeds=seeds, device=torch_device,
                                on_message=on_message)
        by_number = {candidate.number: candidate for candidate in candidates}
        chosen = by_number[confirmation[0].trial]
        on_message(f"chose trial {chosen.number} by mean validation accuracy")

    if no_retrain:
        net, mean, std, train_images, weights_epoch = _search_weights(run, dataset, chosen)
        arch, epochs = chosen.arch, None
        on_message(f"loaded the search's weights of trial {chosen.number} (after epoch {weights_epoch})")
    else:
        epochs = retrain_epochs or chosen.best_epoch or chosen.arch.train.epochs
        arch = chosen.arch.with_epochs(epochs)
        full = full_train_device_data(dataset, torch_device)
        train_images = len(full.train_y)
        on_message(f"retraining trial {chosen.number} for {epochs} epochs on train+validation "
                   f"({train_images} images), seed {chosen.seed}")
        # validate=False: full.val_x is the TEST split, which nothing may look at during training.
        result = train_candidate(arch, full, control=TrialControl(seed=chosen.seed, validate=False))
        if result.outcome != "complete" or result.model is None:
            raise RuntimeError(
                f"the final retrain of trial {chosen.number} ended {result.outcome}: {result.reason}; "
                f"export the search's weights with --no-retrain, or try another --retrain-epochs"
            )
        net, weights_epoch = result.model, epochs
        mean, std = full.mean.cpu().tolist(), full.std.cpu().tolist()
        del full

    net = _cpu_eval(net)
    test_accuracy = _test_accuracy(net, dataset, mean, std)
    on_message(f"test accuracy {test_accuracy:.2%} on {len(dataset.test_labels)} images (evaluated once)")

    meta = {
        **_model_meta(arch, dataset, mean=mean, std=std, test_accuracy=test_accuracy),
        "val_accuracy": chosen.val_acc,
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
    }
    files, verification = _write_model_folder(
        out, net=net, arch=arch, input_shape=dataset.input_shape, class_names=dataset.class_names,
        mean=mean, std=std, verify_images=dataset.test_images[:VERIFY_IMAGES], formats=chosen_formats,
        meta=meta, on_message=on_message,
    )
    _append_export_record(run, {
        "out": str(out.resolve()), "trial": chosen.number, "compact": arch.compact(),
        "test_accuracy": test_accuracy, "test_size": len(dataset.test_labels), "val_accuracy": chosen.val_acc,
        "retrained": not no_retrain, "retrain_epochs": epochs, "formats": list(chosen_formats),
        "created": meta["created"],
    })
    return ExportResult(
        out=out, files=files, compact=arch.compact(), test_accuracy=test_accuracy,
        test_size=len(dataset.test_labels), verification=verification, trial=chosen.number, run=run.name,
        val_accuracy=chosen.val_acc, retrain_epochs=epochs, train_images=train_images, seed=chosen.seed,
        confirmation=confirmation, meta=meta,
    )


def _check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    chosen: list[str] = []
    for name in formats:
        key = str(name).strip().lower()
        if key not in FORMATS:
            raise UserError(f"unknown format {name!r}; valid formats: {', '.join(FORMATS)} (comma-separated)")
        if key not in chosen:
            chosen.append(key)
    if not chosen:
        raise UserError(f"no format to write; pass one or more of {', '.join(FORMATS)}")
    if "onnx" in chosen:
        import importlib.util

        if importlib.util.find_spec("onnxruntime") is None:  # verification runs the file with it
            raise UserError(
                "the onnx format needs onnxruntime, which is not installed; pip install onnxruntime, "
                "or leave onnx out of --format"
            )
    return tuple(chosen)


def _parse_trial(trial: str | int) -> int | None:
    """None for "best", else the trial number."""
    if isinstance(trial, int) and not isinstance(trial, bool) and trial >= 0:
        return trial
    text = str(trial).strip()
    if text.lower() == "best":
        return None
    if text.isdigit():
        return int(text)
    raise UserError(f"--trial {trial!r} is not valid; use best or a trial number such as 0")


def _check_export_options(number: int | None, *, retrain_epochs: int | None, top: int | None, seeds: int,
                          no_retrain: bool) -> None:
    if retrain_epochs is not None and retrain_epochs < 1:
        raise UserError(f"--retrain-epochs must be at least 1, but got {retrain_epochs}")
    if top is not None and top < 1:
        raise UserError(f"--top must be at least 1, but got {top}")
    if seeds < 1:
        raise UserError(f"--seeds must be at least 1, but got {seeds}")
    if top is not None and number is not None:
        raise UserError(
            f"--top chooses among the best trials, so it cannot be combined with --trial {number}; drop one of them"
        )
    if top is not None and no_retrain:
        raise UserError(
            "--top retrains candidates to choose one and --no-retrain exports saved weights; pass only one of them"
        )
    if no_retrain and retrain_epochs is not None:
        raise UserError("--retrain-epochs has no effect with --no-retrain; drop one of them")


def _check_out(out: Path, *, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file; choose a folder for --out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(f"{out} exists; pass --force to overwrite it or choose another --out")


def _candidates(trials: Sequence[Any]) -> list[_Candidate]:
    """Finished trials with an architecture and an accuracy, best first (ties: lowest number)."""
    found = [_to_candidate(trial) for trial in trials if _is_exportable(trial)]
    found.sort(key=lambda candidate: (-candidate.val_acc, candidate.number))
    return found


def _is_exportable(trial: Any) -> bool:
    attrs = trial.user_attrs
    return (trial.state.name == "COMPLETE" and isinstance(attrs.get("arch"), dict)
            and isinstance(attrs.get("best_val_acc"), (int, float)))


def _to_candidate(trial: Any) -> _Candidate:
    attrs = trial.user_attrs
    arch = Architecture.from_dict(attrs["arch"])
    return _Candidate(
        number=trial.number,
        arch=arch,
        val_acc=float(attrs["best_val_acc"]),
        final_val_acc=attrs.get("final_val_acc"),
        best_epoch=attrs.get("best_epoch"),
        seed=int(attrs.get("seed", trial.number)),
        weights_trial=int(attrs.get("duplicate_of", trial.number)),
        hash=attrs.get("hash") or arch.canonical_hash(),
    )


def _model_meta(arch: Architecture, dataset: Any, *, mean: list[float], std: list[float],
                test_accuracy: float) -> dict[str, Any]:
    """What every model.json says about the network, its input and its one test evaluation."""
    return {
        "format": "cnnsearch-model",
        "format_version": MODEL_FORMAT_VERSION,
        "architecture": arch.to_dict(),
        "compact": arch.compact(),
        "class_names": list(dataset.class_names),
        "num_classes": dataset.num_classes,
        "input_shape": list(dataset.input_shape),
        "mean": mean,
        "std": std,
        "input": INPUT_DESCRIPTION,
        "output": "logits (N, num_classes); softmax gives class probabilities",
        "test_accuracy": test_accuracy,
        "test_size": len(dataset.test_labels),
        "test_source": dataset.test_source,
    }


def _candidate(run: RunDir, trials: Sequence[Any], number: int) -> _Candidate:
    trial = find_trial(run, trials, number)
    if not isinstance(trial.user_attrs.get("arch"), dict):
        raise UserError(f"trial {number} of run {run.name!r} has no recorded architecture; choose another --trial")
    if not _is_exportable(trial):
        state = trial.state.name.lower()
        outcome = state if state in ("running", "waiting") else str(trial.user_attrs.get("outcome") or state)
        what = _UNFINISHED_PHRASES.get(outcome, f"ended {outcome} without a validation accuracy")
        reason = trial.user_attrs.get("reason")
        why = f" ({reason})" if reason and outcome not in ("running", "waiting") else ""
        raise UserError(
            f"trial {number} of run {run.name!r} {what}{why}, so it has no final result; "
            f"choose a complete trial (see cnnsearch leaderboard {run.name})"
        )
    return _to_candidate(trial)


def _check_weights(run: RunDir, info: RunInfo, candidate: _Candidate) -> None:
    if not run.weights_file(candidate.weights_trial).is_file():
        raise UserError(
            f"trial {candidate.number} of run {run.name!r} has no saved weights (the search keeps those of the "
            f"best {info.keep_weights} trials only); drop --no-retrain to retrain it"
        )


def _run_dataset(info: RunInfo, *, consequence: str) -> Dataset:
    """The dataset exactly as the run loaded it: same source, size, test share and subset.

    Refuses data that differs from the search's (`consequence` says what would go wrong); the
    fingerprint in run.json is that of the dataset as loaded, before any subset is taken.
    """
    dataset = load_dataset_cached(info.data, data_dir=info.data_dir, image_size=info.image_size, seed=info.split_seed)
    if info.input_shape and list(dataset.input_shape) != list(info.input_shape):
        raise UserError(
            f"{info.data} now gives {'x'.join(map(str, dataset.input_shape))} images but run {info.name!r} used "
            f"{'x'.join(map(str, info.input_shape))}; restore the data the run was searched on"
        )
    recorded = getattr(info, "data_fingerprint", None)  # None for runs made before fingerprints
    if recorded and recorded != dataset_fingerprint(dataset):
        raise UserError(
            f"the data for run {info.name!r} changed since the search ({info.data} now holds different images); "
            f"{consequence}; restore the data or start a new run"
        )
    if info.subset:
        dataset = subsample(dataset, info.subset, seed=info.split_seed)
    return dataset


def _confirm(run: RunDir, info: RunInfo, dataset: Dataset, candidates: list[_Candidate], *, top: int, seeds: int,
             device: torch.device, on_message: Callable[[str], None]) -> list[ConfirmationRow]:
    """Retrain the `top` best distinct candidates `seeds` times on the training split; best mean first.

    Seeds are fresh (k = 1..seeds): the search's own seed is the one that made a candidate look
    best, so repeating it would carry the selection's luck into the confirmation.
    """
    distinct: list[_Candidate] = []
    for candidate in candidates:
        if all(candidate.hash != other.hash for other in distinct):
            distinct.append(candidate)
    if len(distinct) < top:
        on_message(f"--top {top}: the run has only {len(distinct)} distinct finished candidate(s); confirming all of them")
    chosen = distinct[:top]
    data = to_device(dataset, load_split(run.split_file), device)
    rows: list[ConfirmationRow] = []
    total, done = len(chosen) * seeds, 0
    for candidate in chosen:
        row = ConfirmationRow(trial=candidate.number, compact=candidate.arch.compact(), search_val_acc=candidate.val_acc)
        for k in range(1, seeds + 1):
            seed = info.seed + CONFIRM_SEED_STRIDE * k + candidate.number
            done += 1
            result = train_candidate(candidate.arch, data, control=TrialControl(seed=seed))
            row.seeds.append(seed)
            if result.outcome == "complete" and result.best_val_acc is not None:
                row.accuracies.append(result.best_val_acc)
                on_message(f"[{done}/{total}] trial {candidate.number}, seed {seed}: validation {result.best_val_acc:.2%}")
            else:
                row.failures.append(f"seed {seed}: {result.outcome} ({result.reason})")
                on_message(f"[{done}/{total}] trial {candidate.number}, seed {seed}: {result.outcome} ({result.reason})")
        on_message(row.line())
        rows.append(row)
    # A candidate that failed any retraining ranks after every one that never failed.
    rows.sort(key=lambda row: (bool(row.failures) or row.mean is None, -(row.mean or 0.0), row.trial))
    if rows[0].mean is None:
        raise RuntimeError(f"every confirmation retraining failed: {'; '.join(f for row in rows for f in row.failures)}")
    return rows


def _search_weights(
    run: RunDir, dataset: Dataset, candidate: _Candidate
) -> tuple[nn.Module, list[float], list[float], int, int]:
    """The weights the search kept, with the normalisation of the training split they were trained on.

    Returns (net, mean, std, training images, epoch after which the weights were saved).
    """
    path = run.weights_file(candidate.weights_trial)
    split = load_split(run.split_file)
    train_images = dataset.train_images[torch.from_numpy(split.train_indices)]
    mean, std = normalization_stats(train_images)
    net = build_model(candidate.arch, dataset.input_shape, dataset.num_classes)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(saved["state_dict"])
    except (OSError, RuntimeError, KeyError, TypeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(
            f"{path} does not hold the weights of trial {candidate.number} ({first}); drop --no-retrain to retrain it"
        ) from None
    return net, mean, std, len(split.train_indices), int(saved.get("epoch", 0))


# ---- the model folder --------------------------------------------------------------------------------------
def _normalize(images_uint8: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(x / 255 - mean) / std as float32, computed exactly as `DeviceData.normalize` does in training."""
    mean_t = torch.tensor(list(mean), dtype=torch.float32)
    std_t = torch.tensor(list(std), dtype=torch.float32)
    scale = (1.0 / (255.0 * std_t)).view(1, -1, 1, 1)
    shift = (-mean_t / std_t).view(1, -1, 1, 1)
    return images_uint8.cpu().to(torch.float32).mul_(scale).add_(shift)


def _cpu_eval(net: nn.Module) -> nn.Module:
    # Training on a GPU leaves conv weights channels-last; exported files want plain layouts.
    return net.cpu().to(memory_format=torch.contiguous_format).eval()


def _cpu_data(images: torch.Tensor, labels: torch.Tensor, mean: Sequence[float], std: Sequence[float],
              class_names: Sequence[str]) -> DeviceData:
    """A CPU DeviceData whose val split is `images`, for `evaluate` with a given normalisation."""
    return DeviceData(
        train_x=images[:0], train_y=labels[:0], val_x=images.cpu(), val_y=labels.cpu(),
        mean=torch.tensor(list(mean), dtype=torch.float32), std=torch.tensor(list(std), dtype=torch.float32),
        class_names=tuple(class_names),
    )


def _test_accuracy(net: nn.Module, dataset: Dataset, mean: Sequence[float], std: Sequence[float]) -> float:
    # float32 on the CPU: the accuracy of exactly the network the files hold (no bf16 autocast).
    data = _cpu_data(dataset.test_images, dataset.test_labels, mean, std, dataset.class_names)
    return evaluate(net, data, images=data.val_x, labels=data.val_y)


def _temp_name(folder: Path, name: str) -> Path:
    handle, temp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    os.close(handle)
    return Path(temp)


def _write_model_folder(
    out: Path, *, net: nn.Module, arch: Architecture, input_shape: tuple[int, int, int], class_names: Sequence[str],
    mean: list[float], std: list[float], verify_images: torch.Tensor, formats: Sequence[str], meta: dict[str, Any],
    on_message: Callable[[str], None],
) -> tuple[list[Path], dict[str, float]]:
    """Write every format to a temp name, verify each against `net`, then rename all into place.

    A file that disagrees with the PyTorch model by more than VERIFY_TOLERANCE stops the export
    with RuntimeError and leaves `out` as it was. model.json is written last.
    """
    out.mkdir(parents=True, exist_ok=True)
    batch = _normalize(verify_images, mean, std)
    with torch.no_grad():
        reference = net(batch)
    temps: dict[str, Path] = {}
    verification: dict[str, float] = {}
    try:
        for name in formats:
            temp = temps[name] = _temp_name(out, FILE_NAMES[name])
            if name == "pt":
                _save_pt(temp, net, arch, input_shape, class_names, mean, std)
                outputs = _run_pt(temp, batch)
            elif name == "torchscript":
                _save_torchscript(temp, net, batch)
                outputs = _run_torchscript(temp, batch)
            else:
                _save_onnx(temp, net, batch)
                outputs = _run_onnx(temp, batch)
            verification[name] = float((outputs - reference).abs().max()) if len(batch) else 0.0
            if not verification[name] <= VERIFY_TOLERANCE:  # also catches NaN
                raise RuntimeError(
                    f"the exported {name} model differs from the PyTorch model by up to {verification[name]:.3g} "
                    f"(tolerance {VERIFY_TOLERANCE:g}) on {len(batch)} test images; nothing was written to {out}"
                )
            on_message(f"{name}: max |diff| {verification[name]:.2g} on {len(batch)} test images")
        # Every file checked: replace what an earlier export left, then move the new files in.
        for stale in _OWN_FILES:
            (out / stale).unlink(missing_ok=True)
        files = []
        for name, temp in temps.items():
            os.replace(temp, out / FILE_NAMES[name])
            files.append(out / FILE_NAMES[name])
    finally:
        for temp in temps.values():
            temp.unlink(missing_ok=True)
    meta.update(
        files=[path.name for path in files] + [META_FILE],
        verification=verification,
        verification_images=len(batch),
        onnx_io={"input": ONNX_INPUT, "output": ONNX_OUTPUT} if "onnx" in formats else None,
        versions=package_versions(("torch", "cnnsearch", "onnx", "onnxruntime"), python=False),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    write_atomic(out / META_FILE, json.dumps(meta, indent=2) + "\n")
    files.append(out / META_FILE)
    return files, verification


def _save_pt(path: Path, net: nn.Module, arch: Architecture, input_shape: Sequence[int], class_names: Sequence[str],
             mean: list[float], std: list[float]) -> None:
    payload = {
        "format_version": MODEL_FORMAT_VERSION,
        "architecture": arch.to_dict(),
        "state_dict": net.state_dict(),
        "input_shape": [int(size) for size in input_shape],
        "class_names": [str(name) for name in class_names],
        "mean": [float(value) for value in mean],
        "std": [float(value) for value in std],
    }
    torch.save(payload, path)


def _run_pt(path: Path, batch: torch.Tensor) -> torch.Tensor:
    net = _net_from_payload(torch.load(path, map_location="cpu", weights_only=True))
    with torch.no_grad():
        return net(batch)


def _net_from_payload(payload: dict[str, Any]) -> CandidateNet:
    arch = Architecture.from_dict(payload["architecture"])
    net = build_model(arch, tuple(payload["input_shape"]), len(payload["class_names"]))
    net.load_state_dict(payload["state_dict"])
    return net.eval()


def _save_torchscript(path: Path, net: nn.Module, batch: torch.Tensor) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export, still works
        try:
            module = torch.jit.script(net)
        except Exception:  # a layer script can't compile: tracing records what the eval model does
            module = torch.jit.trace(net, batch[:2], check_trace=False)
        torch.jit.save(module, str(path))


def _run_torchscript(path: Path, batch: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location="cpu")
    module.eval()
    with torch.no_grad():
        return module(batch)


def _save_onnx(path: Path, net: nn.Module, batch: torch.Tensor) -> None:
    """ONNX with a dynamic batch axis: the legacy exporter (needs no onnxscript), else torch.export's."""
    example = batch[:2] if len(batch) >= 2 else torch.zeros(2, *batch.shape[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                net, (example,), str(path), dynamo=False, input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
                dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}},
            )
            return
        except Exception as legacy_error:  # removed or failing legacy exporter: try the dynamo one
            onnx_logger = logging.getLogger("torch.onnx")
            level = onnx_logger.level
            onnx_logger.setLevel(logging.ERROR)
            try:
                program = torch.onnx.export(
                    net, (example,), dynamo=True, input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
                    dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False,
                )
                program.save(str(path))
            except Exception as dynamo_error:
                raise RuntimeError(
                    f"ONNX export failed with both exporters: legacy: {legacy_error}; dynamo: {dynamo_error}"
                ) from dynamo_error
            finally:
                onnx_logger.setLevel(level)


def _run_onnx(path: Path, batch: torch.Tensor) -> torch.Tensor:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return torch.from_numpy(session.run(None, {name: batch.numpy()})[0])


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


# ---- loading back ---------------------------------------------------------------------------------------------
def read_model_meta(model_dir: Path) -> dict[str, Any]:
    """model.json of an export folder; {} when it has none."""
    path = Path(model_dir) / META_FILE
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"{path} is not valid JSON ({error}); export the model again") from None
    return meta if isinstance(meta, dict) else {}


def load_exported(model_dir: Path) -> ExportedModel:
    """Load an export folder's model.pt into an eval-mode CPU network, with its preprocessing."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise UserError(f"model folder {model_dir} does not exist; pass a folder written by `cnnsearch export`")
    path = model_dir / FILE_NAMES["pt"]
    if not path.is_file():
        raise UserError(
            f"{model_dir} has no model.pt; export the model with --format pt (or predict with --runtime onnx)"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        net = _net_from_payload(payload)
        arch = Architecture.from_dict(payload["architecture"])
        input_shape = tuple(int(size) for size in payload["input_shape"])
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, pickle.UnpicklingError,
            InfeasibleArchitecture) as error:  # any damage to the file means the same to the user
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{path} is not a model written by `cnnsearch export` ({first}); export the model again") from None
    return ExportedModel(
        net=net, arch=arch, class_names=tuple(payload["class_names"]), input_shape=input_shape,  # type: ignore[arg-type]
        mean=[float(value) for value in payload["mean"]], std=[float(value) for value in payload["std"]],
        meta=read_model_meta(model_dir),
    )


# ---- fine-tuning ----------------------------------------------------------------------------------------------
class _FrozenStages(nn.Sequential):
    """`features` with frozen weights that stay in eval mode, so batch-norm statistics stay those the
    features were trained with (Lightning's `.train()` at each epoch would otherwise update them)."""

    def train(self, mode: bool = True) -> "_FrozenStages":
        return super().train(False)


def finetune_model(
    model_dir: Path,
    *,
    data: str,
    out: Path,
    epochs: int = 5,
    freeze: bool = False,
    lr: float | None = None,
    data_dir: str | None = None,
    force: bool = False,
    seed: int = 0,
    device: str = "auto",
    on_message: Callable[[str], None] = _quiet,
) -> ExportResult:
    """Transfer an exported network to new data: a new classifier, optionally frozen conv stages.

    The new data is split into train/validation (seed `seed`); its test split is evaluated once
    at the end. The model's own normalisation is kept: its features were trained with it.
    """
    model_dir, out = Path(model_dir), Path(out)
    if epochs < 1:
        raise UserError(f"--epochs must be at least 1, but got {epochs}")
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise UserError(f"--lr must be a positive number, but got {lr}")
    source = load_exported(model_dir)
    if out.resolve() == model_dir.resolve():
        raise UserError(f"--out {out} is the model folder being fine-tuned; choose another --out")
    _check_out(out, force=force)
    torch_device = resolve_device(device)

    channels, height, width = source.input_shape
    dataset = load_dataset(data, data_dir=data_dir, image_size=height if height == width else None, seed=seed)
    have = dataset.input_shape[0]
    kinds = {1: "grayscale", 3: "colour"}
    if have != channels and {have, channels} != {1, 3}:
        raise UserError(
            f"{data} has {have}-channel images but the model takes {channels}-channel "
            f"({kinds.get(channels, 'other')}) images; fine-tune on {kinds.get(channels, 'matching')} images instead"
        )
    if have != channels:
        # A folder with one colour image among grayscale ones loads as colour: convert, don't refuse.
        dataset = replace(dataset, train_images=to_channels(dataset.train_images, channels),
                          test_images=to_channels(dataset.test_images, channels))
        how = ("with Pillow's luma weights 0.299 R + 0.587 G + 0.114 B" if channels == 1
               else "by repeating the grey channel")
        on_message(f"converted the {kinds[have]} images of {data} to {kinds[channels]} {how}, "
                   f"as the model takes {channels}-channel images")
    if dataset.input_shape[1:] != (height, width):
        raise UserError(
            f"{data} has {dataset.input_shape[1]}x{dataset.input_shape[2]} images but the model takes "
            f"{height}x{width}; resize the images to {height}x{width}"
        )
    if dataset.resized_from:
        sizes = ", ".join(f"{h}x{w}" for h, w in dataset.resized_from[:3])
        more = f" and {len(dataset.resized_from) - 3} more sizes" if len(dataset.resized_from) > 3 else ""
        on_message(f"resized {sizes}{more} images to the model's {height}x{width} input")
    split = make_split(dataset.train_labels, seed=seed)
    device_data = to_device(dataset, split, torch_device)
    device_data.mean = torch.tensor(source.mean, dtype=torch.float32, device=torch_device)
    device_data.std = torch.tensor(source.std, dtype=torch.float32, device=torch_device)

    net = source.net
    _replace_classifier(net, dataset.num_classes, seed=seed)
    if freeze:
        for parameter in net.features.parameters():
            parameter.requires_grad_(False)
        net.features = _FrozenStages(*net.features)
    net.train()
    rate = lr if lr is not None else source.arch.train.lr / 10  # gentle: the features are already trained
    n_train = len(split.train_indices)
    # Training drops partial batches: 122 images at batch 64 would be 1 step per epoch.
    batch = min(source.arch.train.batch_size, max(FINETUNE_MIN_BATCH, n_train // FINETUNE_MIN_STEPS))
    arch = replace(source.arch, train=replace(source.arch.train, epochs=epochs, lr=rate, batch_size=batch))
    steps = max(1, n_train // batch)
    model_batch = source.arch.train.batch_size
    lowered = (f", lowered from the model's {model_batch}, which gives {max(1, n_train // model_batch)} step(s) "
               f"per epoch" if batch < model_batch else "")
    on_message(f"fine-tuning {source.arch.compact()} on {data}: {n_train} train / "
               f"{len(split.val_indices)} val images, {dataset.num_classes} classes, {epochs} epochs of {steps} "
               f"step(s) (batch {batch}{lowered}), lr {rate:g}" + (", conv stages frozen" if freeze else ""))
    result = train_candidate(arch, device_data, net=net, control=TrialControl(seed=seed))
    if result.outcome == "nan":
        raise UserError(f"fine-tuning diverged ({result.reason}); pass a smaller --lr than {rate:g}")
    if result.outcome != "complete" or result.model is None:
        raise RuntimeError(f"fine-tuning ended {result.outcome}: {result.reason}")
    net = result.model
    if freeze:
        net.features = nn.Sequential(*net.features)  # a plain Sequential again: same state_dict keys
        for parameter in net.features.parameters():
            parameter.requires_grad_(True)
    net = _cpu_eval(net)
    val_accuracy = result.final_val_acc
    if val_accuracy is not None:
        on_message(f"validation accuracy after fine-tuning: {val_accuracy:.2%}")
    test_accuracy = _test_accuracy(net, dataset, source.mean, source.std)
    on_message(f"test accuracy {test_accuracy:.2%} on {len(dataset.test_labels)} images (evaluated once)")

    meta = {
        **_model_meta(arch, dataset, mean=source.mean, std=source.std, test_accuracy=test_accuracy),
        "val_accuracy": val_accuracy,
        "run": None,
        "data": data,
        "trial": None,
        "retrained": False,
        "retrain_epochs": None,
        "weights_epoch": epochs,
        "train_images": len(split.train_indices),
        "seed": seed,
        "confirmation": [],
        "finetuned_from": {
            "model_dir": str(model_dir.resolve()),
            "run": source.meta.get("run"),
            "trial": source.meta.get("trial"),
            "data": source.meta.get("data"),
            "class_names": list(source.class_names),
            "test_accuracy": source.meta.get("test_accuracy"),
        },
        "finetune": {"epochs": epochs, "lr": rate, "freeze": freeze, "seed": seed,
                     "val_fraction": split.val_fraction, "val_size": len(split.val_indices)},
    }
    files, verification = _write_model_folder(
        out, net=net, arch=arch, input_shape=dataset.input_shape, class_names=dataset.class_names,
        mean=source.mean, std=source.std, verify_images=dataset.test_images[:VERIFY_IMAGES], formats=FORMATS,
        meta=meta, on_message=on_message,
    )
    return ExportResult(
        out=out, files=files, compact=arch.compact(), test_accuracy=test_accuracy, test_size=len(dataset.test_labels),
        verification=verification, val_accuracy=val_accuracy, retrain_epochs=epochs,
        train_images=len(split.train_indices), seed=seed, finetuned_from=str(model_dir), meta=meta,
    )


def _replace_classifier(net: nn.Module, num_classes: int, *, seed: int) -> None:
    """Swap the last Linear of `net.head` for a fresh one with `num_classes` outputs."""
    head = net.head
    index = max((i for i, layer in enumerate(head) if isinstance(layer, nn.Linear)), default=None)
    if index is None:
        raise UserError("the model's head has no dense classifier to replace; export it again with cnnsearch")
    with torch.random.fork_rng(devices=[]):  # seeded init without changing the caller's global stream
        torch.manual_seed(seed)
        head[index] = nn.Linear(head[index].in_features, num_classes)


# ---- reproducing a trial -------------------------------------------------------------------------------------
def rerun_trial(run: RunDir, number: int, *, device: str = "auto") -> RerunResult:
    """Train one trial again exactly as the search did (spec, split, seed) and compare accuracies.

    A trial the pruner stopped is re-run to the same epoch. Unknown trials, and trials without
    an architecture or a recorded accuracy, raise UserError.
    """
    info = run.read_info()
    study = run.load_study(info)
    trials = study.get_trials(deepcopy=False)
    trial = find_trial(run, trials, number)
    attrs = trial.user_attrs
    source_trial = attrs.get("duplicate_of")
    if source_trial is not None:  # its accuracy was copied from the original: re-run that training
        attrs = find_trial(run, trials, int(source_trial)).user_attrs
    if not isinstance(attrs.get("arch"), dict):
        raise UserError(f"trial {number} of run {run.name!r} has no recorded architecture; choose another trial")
    recorded = attrs.get("best_val_acc")
    if not isinstance(recorded, (int, float)):
        outcome = attrs.get("outcome", trial.state.name.lower())
        raise UserError(
            f"trial {number} of run {run.name!r} ended {outcome} without a validation accuracy, so there is "
            f"nothing to reproduce; choose a trial that trained at least one epoch"
        )
    arch = Architecture.from_dict(attrs["arch"])
    seed = int(attrs.get("seed", info.seed + int(attrs.get("origin", number))))
    recorded_curve = [float(value) for value in attrs.get("val_acc") or []]
    epochs_run = int(attrs.get("epochs_run") or len(recorded_curve) or arch.train.epochs)
    torch_device = resolve_device(device)

    dataset = _run_dataset(info, consequence="the saved split would pick other images than the search trained on")
    data = to_device(dataset, load_split(run.split_file), torch_device)
    # Same schedule as the search (the arch's epochs); a pruned trial stops where it was stopped.
    stop_after = epochs_run if epochs_run < arch.train.epochs else None
    callback = (lambda epoch, accuracy: epoch >= stop_after) if stop_after else None
    result = train_candidate(arch, data, control=TrialControl(seed=seed, epoch_callback=callback))
    curve = list(result.val_acc[:epochs_run])
    stopped_as_recorded = result.outcome == "complete" or (stop_after is not None and result.outcome == "pruned")
    reproduced = max(curve) if curve and stopped_as_recorded else None
    return RerunResult(
        trial=number, recorded=float(recorded), reproduced=reproduced, seed=seed, compact=arch.compact(),
        outcome=result.outcome, reason=result.reason, recorded_curve=recorded_curve, reproduced_curve=curve,
        source_trial=int(source_trial) if source_trial is not None else None,
    )
