"""Owns the copies that live on the training device: train and validation as uint8
(`DeviceData`), their statistics, and the one normalisation (x / 255 - mean) / std.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from cnnsearch.data.dataset import Dataset
from cnnsearch.data.split import Split
from cnnsearch.errors import UserError


@dataclass
class DeviceData:
    """Train and validation images resident on the training device as uint8; normalised on the fly."""

    train_x: torch.Tensor  # uint8 (N, C, H, W) on device
    train_y: torch.Tensor  # int64 (N,) on device
    val_x: torch.Tensor  # uint8 (M, C, H, W) on device
    val_y: torch.Tensor  # int64 (M,) on device
    mean: torch.Tensor  # float32 (C,): per-channel mean of train_x in [0, 1] units, on device
    std: torch.Tensor  # float32 (C,): per-channel std of train_x in [0, 1] units, on device
    class_names: tuple[str, ...]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def normalize(self, x_uint8: torch.Tensor, *, channels_last: bool = False) -> torch.Tensor:
        """float32 (x / 255 - mean) / std for a (B, C, H, W) batch, optionally channels-last."""
        if channels_last:
            # Convert while still 1 byte per value; the float ops below keep the layout.
            x_uint8 = x_uint8.contiguous(memory_format=torch.channels_last)
        return normalize(x_uint8, self.mean, self.std)


def normalize(
    images_uint8: torch.Tensor, mean: torch.Tensor | Sequence[float], std: torch.Tensor | Sequence[float]
) -> torch.Tensor:
    """float32 (x / 255 - mean) / std of a uint8 (B, C, H, W) batch, on the batch's device.

    The one normalisation of cnnsearch: training, evaluation, export verification and
    `cnnsearch predict --runtime torch` all call it (predict's numpy path mirrors it).
    """
    device = images_uint8.device
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=device)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=device)
    scale = (1.0 / (255.0 * std_t)).view(1, -1, 1, 1)
    shift = (-mean_t / std_t).view(1, -1, 1, 1)
    return images_uint8.to(torch.float32).mul_(scale).add_(shift)


def normalization_stats(images_uint8: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 (N, C, H, W) images in [0, 1] units; std floored at 1e-3.

    Exact and cheap: a 256-bin histogram per channel instead of a float copy of the data.
    """
    if images_uint8.dtype != torch.uint8 or images_uint8.dim() != 4:
        raise ValueError(f"expected uint8 (N, C, H, W) images, got {images_uint8.dtype} {tuple(images_uint8.shape)}")
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means: list[float] = []
    stds: list[float] = []
    for c in range(images_uint8.shape[1]):
        hist = torch.bincount(images_uint8[:, c].reshape(-1), minlength=256).to("cpu", torch.float64)
        total = hist.sum()
        if total == 0:
            means.append(0.0)
            stds.append(1.0)
            continue
        mean = float((hist * values).sum() / total)
        var = float((hist * (values - mean) ** 2).sum() / total)
        means.append(mean)
        stds.append(max(math.sqrt(var), 1e-3))  # a constant channel must not divide by zero
    return means, stds


def _device_data(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    class_names: tuple[str, ...],
    device: str | torch.device,
) -> DeviceData:
    device = torch.device(device)
    mean, std = normalization_stats(train_x)
    return DeviceData(
        train_x=train_x.to(device),
        train_y=train_y.to(device),
        val_x=val_x.to(device),
        val_y=val_y.to(device),
        mean=torch.tensor(mean, dtype=torch.float32, device=device),
        std=torch.tensor(std, dtype=torch.float32, device=device),
        class_names=class_names,
    )


def to_device(dataset: Dataset, split: Split, device: str | torch.device) -> DeviceData:
    """The split's train and validation images on `device`, normalised with train-only statistics."""
    n = len(dataset.train_labels)
    for indices in (split.train_indices, split.val_indices):
        if indices.size and (indices.min() < 0 or indices.max() >= n):
            raise UserError(
                f"the saved split refers to image {int(indices.max())} but {dataset.name} has {n} training images; "
                f"start a new run for this dataset."
            )
    train = torch.from_numpy(split.train_indices)
    val = torch.from_numpy(split.val_indices)
    return _device_data(
        dataset.train_images[train],
        dataset.train_labels[train],
        dataset.train_images[val],
        dataset.train_labels[val],
        dataset.class_names,
        device,
    )


def full_train_device_data(dataset: Dataset, device: str | torch.device) -> DeviceData:
    """The whole training pool as train and the TEST set as val: for the final export only."""
    return _device_data(
        dataset.train_images,
        dataset.train_labels,
        dataset.test_images,
        dataset.test_labels,
        dataset.class_names,
        device,
    )
