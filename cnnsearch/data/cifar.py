"""Owns the CIFAR-10 and CIFAR-100 sources (the python pickle batches)."""

from __future__ import annotations

import os
import pickle
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnsearch.data.dataset import Dataset, cache_root, download_file, search_roots
from cnnsearch.errors import UserError


@dataclass(frozen=True)
class _CifarSource:
    title: str
    name: str
    folder: str  # what the official archive unpacks to
    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    names_key: str
    labels_key: str
    url: str
    md5: str


CIFAR_SOURCES = {
    "cifar10": _CifarSource(
        title="CIFAR-10",
        name="cifar10",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_file="test_batch",
        meta_file="batches.meta",
        names_key="label_names",
        labels_key="labels",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
    ),
    "cifar100": _CifarSource(
        title="CIFAR-100",
        name="cifar100",
        folder="cifar-100-python",
        train_files=("train",),
        test_file="test",
        meta_file="meta",
        names_key="fine_label_names",
        labels_key="fine_labels",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
    ),
}


def _unpickle(path: Path) -> dict[str, Any]:
    """One CIFAR batch file, with bytes keys (written by Python 2) turned into str.

    These are pickles: only load files you trust, as with any CIFAR loader.
    """
    try:
        with path.open("rb") as f:
            obj = pickle.load(f, encoding="bytes")
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, AttributeError, ImportError) as err:
        raise UserError(f"cannot read {path} ({err}); replace it with the file from the official archive.") from err
    if not isinstance(obj, dict):
        raise UserError(f"{path} is not a CIFAR batch file; replace it with the file from the official archive.")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_batch(path: Path, labels_key: str) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    if "data" not in batch or labels_key not in batch:
        raise UserError(
            f"{path} lacks the 'data' or '{labels_key}' entry; replace it with the file from the official archive."
        )
    data = np.asarray(batch["data"], dtype=np.uint8)
    labels = np.asarray(batch[labels_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise UserError(
            f"{path} holds data of shape {data.shape} and {len(labels)} labels, expected (N, 3072) and N; "
            f"replace it with the file from the official archive."
        )
    # Each row is the red plane, then green, then blue, each 32x32 row-major.
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar(spec: str, source: _CifarSource, data_dir: str | Path | None, download: bool) -> Dataset:
    needed = (*source.train_files, source.test_file, source.meta_file)
    roots = search_roots(source.name, data_dir, inner=source.folder)
    root = next((r for r in roots if all((r / f).is_file() for f in needed)), None)
    if root is None and download:
        root = _download_cifar(source)
    if root is None:
        raise UserError(
            f"{source.title} files not found in {', '.join(str(r) for r in roots)}; to get them, run with --download, "
            f"or pass --data-dir DIR holding the unpacked {source.folder} folder ({', '.join(needed)})."
        )
    parts = [_cifar_batch(root / f, source.labels_key) for f in source.train_files]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_x, test_y = _cifar_batch(root / source.test_file, source.labels_key)
    meta = _unpickle(root / source.meta_file)
    if source.names_key not in meta:
        raise UserError(f"{root / source.meta_file} lacks '{source.names_key}'; replace it with the official file.")
    names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta[source.names_key])
    for labels in (train_y, test_y):
        if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
            raise UserError(
                f"{source.title} labels in {root} fall outside 0..{len(names) - 1}; replace the files with the official ones."
            )
    return Dataset(
        name=spec,
        train_images=torch.from_numpy(np.ascontiguousarray(train_x)),
        train_labels=torch.from_numpy(train_y),
        test_images=torch.from_numpy(np.ascontiguousarray(test_x)),
        test_labels=torch.from_numpy(test_y),
        class_names=names,
        test_source="official",
    )


def _download_cifar(source: _CifarSource) -> Path:
    """Download and unpack the official archive into the cache; returns the unpacked folder."""
    cache = cache_root() / source.name
    archive = cache / Path(source.url).name
    if not archive.is_file():
        download_file(source.url, archive, source.md5)
    # Unpack beside the target and rename, so a half-extracted folder is never found later.
    with tempfile.TemporaryDirectory(dir=cache, prefix=".unpack-") as tmp:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(tmp, filter="data")
        except (OSError, tarfile.TarError, EOFError) as err:
            raise UserError(f"cannot unpack {archive} ({err}); delete it and run again with --download.") from err
        target = cache / source.folder
        if target.exists():
            shutil.rmtree(target)
        os.replace(Path(tmp) / source.folder, target)
    return target
