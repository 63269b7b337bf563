"""Datasets: one module per source (`digits`, `idx`, `cifar`, `folder`), the common `Dataset` and
finding files (`dataset`), loading by spec (`load`), the train/validation split (`split`), the
copies resident on the training device and the one normalisation (`device`), and augmentation
on the device (`augment`).

Must not know models, specs, search spaces, Optuna or Lightning.

Public names are re-exported here and imported on first use (PEP 562), so importing the
package costs nothing until a name is needed.
"""

from __future__ import annotations

from cnnsearch._lazy import lazy_exports

_EXPORTS = {
    "make_generator": "augment",
    "augment_batch": "augment",
    "load_cifar": "cifar",
    "DataWarning": "dataset",
    "Dataset": "dataset",
    "dataset_fingerprint": "dataset",
    "to_channels": "dataset",
    "check_fraction": "dataset",
    "cache_root": "dataset",
    "search_roots": "dataset",
    "download_file": "dataset",
    "DeviceData": "device",
    "normalize": "device",
    "normalization_stats": "device",
    "to_device": "device",
    "full_train_device_data": "device",
    "load_digits_dataset": "digits",
    "load_folder": "folder",
    "read_idx": "idx",
    "load_idx": "idx",
    "load_dataset": "load",
    "load_dataset_cached": "load",
    "content_seed": "load",
    "load_run_dataset": "load",
    "load_run_split": "load",
    "stratified_partition": "split",
    "Split": "split",
    "make_split": "split",
    "save_split": "split",
    "load_split": "split",
    "subsample": "split",
}
__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
