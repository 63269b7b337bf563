"""cnnsearch draws its stratified splits and reads the digits without importing scikit-learn;
both must give exactly what scikit-learn gives, or every saved split and held-out test share
would change under the runs that recorded them."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from cnnsearch.data.digits import digits_file, load_digits_dataset
from cnnsearch.data.split import stratified_partition


def test_the_stratified_draw_is_scikit_learns_on_many_label_sets() -> None:
    rng = np.random.default_rng(0)
    cases = 0
    for _ in range(300):
        classes = int(rng.integers(2, 12))
        weights = rng.dirichlet(np.ones(classes) * rng.choice([0.5, 5.0]))
        n = int(rng.integers(4 * classes, 3000))
        labels = rng.choice(classes, size=n, p=weights).astype(np.int64)
        share = float(rng.choice([0.1, 0.15, 0.2, 0.25, 0.5, rng.uniform(0.05, 0.6)]))
        seed = int(rng.integers(0, 2**31 - 1))
        try:
            kept, taken = train_test_split(np.arange(n), test_size=share, stratify=labels, random_state=seed)
        except ValueError:  # too few of a class for scikit-learn: cnnsearch refuses those itself
            continue
        ours = stratified_partition(labels, share, seed=seed, what="test share")
        assert np.array_equal(ours[0], np.sort(kept)) and np.array_equal(ours[1], np.sort(taken)), (n, share, seed)
        cases += 1
    assert cases > 200  # most draws were compared


@pytest.mark.parametrize("share", [0.15, 0.2])
def test_the_digits_splits_are_scikit_learns(share: float) -> None:
    images, labels, _ = load_digits_dataset()
    for seed in range(20):
        kept, taken = train_test_split(np.arange(len(labels)), test_size=share, stratify=labels, random_state=seed)
        ours = stratified_partition(labels, share, seed=seed, what="test share")
        assert np.array_equal(ours[0], np.sort(kept)) and np.array_equal(ours[1], np.sort(taken))


def test_the_digits_are_scikit_learns_read_without_it() -> None:
    assert digits_file() is not None, "scikit-learn's digits.csv.gz moved: load_digits_dataset falls back to it"
    images, labels, names = load_digits_dataset()
    bunch = load_digits()
    assert np.array_equal(labels, bunch.target) and names == tuple(str(i) for i in range(10))
    assert np.array_equal(images[:, 0], np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8))
    assert images.shape == (1797, 1, 8, 8) and images.dtype == np.uint8
