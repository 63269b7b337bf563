"""Owns the built-in dataset: scikit-learn's 8x8 digits (bundled, no network)."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np


def digits_file() -> Path | None:
    """scikit-learn's digits.csv.gz, found without importing scikit-learn (None: not there)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    return path if path.is_file() else None


def load_digits_dataset() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """The 1,797 digits as uint8 images (N, 1, 8, 8), their labels and class names.

    Read from scikit-learn's bundled file as `sklearn.datasets.load_digits` reads it (64 pixel
    columns, then the label), without importing scikit-learn and the pandas it imports.
    """
    path = digits_file()
    if path is not None:
        with gzip.open(path, "rt") as handle:
            data = np.loadtxt(handle, delimiter=",")
        pixels, target = data[:, :-1].reshape(-1, 8, 8), data[:, -1]
    else:  # another layout of scikit-learn: its own loader
        from sklearn.datasets import load_digits

        bunch = load_digits()
        pixels, target = bunch.images, bunch.target
    # Values are 0..16 counts of set pixels in a 4x4 block; stretch them onto 0..255.
    images = np.rint(pixels * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    labels = target.astype(np.int64)
    return images, labels, tuple(str(i) for i in range(10))
