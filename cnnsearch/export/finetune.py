"""Owns `cnnsearch finetune`: transfer an exported network to new data, with a new classifier
and optionally frozen feature layers, then export it again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from cnnsearch.data.dataset import to_channels
from cnnsearch.data.device import to_device
from cnnsearch.data.load import load_dataset
from cnnsearch.data.split import make_split
from cnnsearch.errors import UserError
from cnnsearch.export.formats import VERIFY_IMAGES
from cnnsearch.export.model_files import (
    _cpu_eval,
    _model_meta,
    _write_model_folder,
    load_exported,
)
from cnnsearch.export.options import FORMATS, check_finetune_options
from cnnsearch.export.retrain import ExportResult, ignore_message
from cnnsearch.export.testset import measure_test_accuracy
from cnnsearch.train.loop import resolve_device, train_candidate
from cnnsearch.train.result import TrialControl
from cnnsearch.words import count

FINETUNE_MIN_STEPS = 8  # optimiser steps per fine-tuning epoch that the batch size is lowered for


FINETUNE_MIN_BATCH = 8  # images per step, at least: smaller batches make batch-norm statistics noisy


class _FrozenStages(nn.Sequential):
    """`features` with frozen weights that stay in eval mode, so batch-norm statistics stay those the
    features were trained with (Lightning's `.train()` at each epoch would otherwise update them)."""

    def train(self, mode: bool = True) -> _FrozenStages:
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
    on_message: Callable[[str], None] = ignore_message,
) -> ExportResult:
    """Transfer an exported network to new data: a new classifier, optionally frozen conv stages.

    The new data is split into train/validation (seed `seed`); its test split is evaluated once
    at the end. The model's own normalisation is kept: its features were trained with it.
    """
    model_dir, out = Path(model_dir), Path(out)
    check_finetune_options(model_dir, out, epochs=epochs, lr=lr, force=force)
    source = load_exported(model_dir)
    torch_device = resolve_device(device)

    channels, height, width = source.input_shape
    dataset = load_dataset(data, data_dir=data_dir, image_size=height if height == width else None)
    have = dataset.input_shape[0]
    kinds = {1: "grayscale", 3: "colour"}
    if have != channels and {have, channels} != {1, 3}:
        raise UserError(
            f"{data} has {have}-channel images but the model takes {channels}-channel "
            f"({kinds.get(channels, 'other')}) images; fine-tune on {kinds.get(channels, 'matching')} images instead"
        )
    if have != channels:
        # A folder with one colour image among grayscale ones loads as colour: convert, don't refuse.
        dataset = replace(
            dataset,
            train_images=to_channels(dataset.train_images, channels),
            test_images=to_channels(dataset.test_images, channels),
        )
        how = (
            "with Pillow's luma weights 0.299 R + 0.587 G + 0.114 B"
            if channels == 1
            else "by repeating the grey channel"
        )
        on_message(
            f"converted the {kinds[have]} images of {data} to {kinds[channels]} {how}, "
            f"as the model takes {channels}-channel images"
        )
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
    lowered = (
        f", lowered from the model's {model_batch}, which gives {count(max(1, n_train // model_batch), 'step')} per epoch"
        if batch < model_batch
        else ""
    )
    on_message(
        f"fine-tuning {source.arch.compact()} on {data}: {n_train} train / "
        f"{len(split.val_indices)} val images, {dataset.num_classes} classes, {count(epochs, 'epoch')} of "
        f"{count(steps, 'step')} (batch {batch}{lowered}), lr {rate:g}" + (", conv stages frozen" if freeze else "")
    )
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
    test_accuracy = measure_test_accuracy(net, dataset, source.mean, source.std)
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
        "finetune": {
            "epochs": epochs,
            "lr": rate,
            "freeze": freeze,
            "seed": seed,
            "val_fraction": split.val_fraction,
            "val_size": len(split.val_indices),
        },
    }
    files, verification = _write_model_folder(
        out,
        net=net,
        arch=arch,
        input_shape=dataset.input_shape,
        class_names=dataset.class_names,
        mean=source.mean,
        std=source.std,
        verify_images=dataset.test_images[:VERIFY_IMAGES],
        formats=FORMATS,
        meta=meta,
        on_message=on_message,
    )
    return ExportResult(
        out=out,
        files=files,
        compact=arch.compact(),
        test_accuracy=test_accuracy,
        test_size=len(dataset.test_labels),
        verification=verification,
        val_accuracy=val_accuracy,
        retrain_epochs=epochs,
        train_images=len(split.train_indices),
        seed=seed,
        finetuned_from=str(model_dir),
        meta=meta,
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
