"""Owns the built-in dataset: scikit-learn's 8x8 digits (bundled, no network)."""

from __future__ import annotations

import numpy as np


def load_digits_dataset() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no network

    bunch = load_digits()
    # Values are 0..16 counts of set pixels in a 4x4 block; stretch them onto 0..255.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    return images, labels, tuple(str(i) for i in range(10))
