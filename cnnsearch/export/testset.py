"""Owns the test split's two rules at export: it must not hold training images, and it is
evaluated once, in float32 on the CPU, on exactly the network the files hold.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cnnsearch.data.dataset import Dataset
from cnnsearch.data.device import DeviceData
from cnnsearch.errors import UserError
from cnnsearch.train.evaluate import evaluate
from cnnsearch.train.plan import FLOAT32


def check_test_share_unseen(dataset: Dataset, *, run: str) -> None:
    """Refuse data whose held-out test images also appear (identical pixels) among its training images.

    Every export trains on images of the training pool only, so a test image found there would
    be counted in the test accuracy after the network had learnt it. Official test sets are
    taken as their publishers made them.
    """
    if dataset.test_source != "held-out":
        return
    trained = {_image_key(image) for image in dataset.train_images}
    seen = sum(1 for image in dataset.test_images if _image_key(image) in trained)
    if seen:
        raise UserError(
            f"{seen} of the {len(dataset.test_labels)} test images are also training images (identical pixels) "
            f"in the data of run {run!r} ({dataset.name}), so its test accuracy would count images the model "
            f"trained on; remove the duplicate images and start a new run"
        )


def _image_key(image: torch.Tensor) -> bytes:
    import hashlib

    return hashlib.sha256(image.numpy().tobytes()).digest()


def _cpu_data(
    images: torch.Tensor, labels: torch.Tensor, mean: Sequence[float], std: Sequence[float], class_names: Sequence[str]
) -> DeviceData:
    """A CPU DeviceData whose val split is `images`, for `evaluate` with a given normalisation."""
    return DeviceData(
        train_x=images[:0],
        train_y=labels[:0],
        val_x=images.cpu(),
        val_y=labels.cpu(),
        mean=torch.tensor(list(mean), dtype=torch.float32),
        std=torch.tensor(list(std), dtype=torch.float32),
        class_names=tuple(class_names),
    )


def measure_test_accuracy(net: nn.Module, dataset: Dataset, mean: Sequence[float], std: Sequence[float]) -> float:
    # float32 on the CPU: the accuracy of exactly the network the files hold (no bf16 autocast).
    data = _cpu_data(dataset.test_images, dataset.test_labels, mean, std, dataset.class_names)
    return evaluate(net, data, images=data.val_x, labels=data.val_y, plan=FLOAT32)
