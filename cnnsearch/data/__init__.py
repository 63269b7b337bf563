"""Datasets: one module per source (`digits`, `idx`, `cifar`, `folder`), the common `Dataset` and
finding files (`dataset`), loading by spec (`load`), the train/validation split (`split`), the
copies resident on the training device and the one normalisation (`device`), and augmentation
on the device (`augment`).

Must not know models, specs, search spaces, Optuna or Lightning.

Public names are re-exported here and imported on first use (PEP 562), so importing the
package costs nothing until a name is needed.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "make_generator": "augment",
    "augment_batch": "augment",
    "DataWarning": "dataset",
    "Dataset": "dataset",
    "dataset_fingerprint": "dataset",
    "to_channels": "dataset",
    "DeviceData": "device",
    "normalize": "device",
    "normalization_stats": "device",
    "to_device": "device",
    "full_train_device_data": "device",
    "read_idx": "idx",
    "load_dataset": "load",
    "load_dataset_cached": "load",
    "load_run_dataset": "load",
    "Split": "split",
    "make_split": "split",
    "save_split": "split",
    "load_split": "split",
    "subsample": "split",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
