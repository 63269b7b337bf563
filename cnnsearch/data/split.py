"""Owns splitting: stratified partitions, the train/validation `Split` saved with a run, and
stratified subsets.
"""

from __future__ import annotations

import math
import os
import tempfile
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from cnnsearch.data.dataset import Dataset, check_fraction
from cnnsearch.errors import UserError
from cnnsearch.run.folder import honour_umask


def stratified_partition(
    labels: np.ndarray, share: float, *, seed: int, what: str, names: tuple[str, ...] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (kept, taken), `taken` a stratified `share`; both sorted int64.

    The draw is scikit-learn's (`train_test_split(stratify=labels, random_state=seed)`), made
    here without importing scikit-learn (and the pandas it imports), a second of every process's
    start; tests/data/test_split_draw.py pins it to the installed scikit-learn's.
    """
    labels = np.asarray(labels)
    n = len(labels)
    classes, counts = np.unique(labels, return_counts=True)
    if counts.size and counts.min() < 2:
        bad = classes[counts.argmin()]
        label = names[int(bad)] if names is not None and 0 <= int(bad) < len(names) else str(bad)
        raise UserError(
            f"class '{label}' has only {counts.min()} image, but a stratified {what} needs at least 2 per class; "
            f"add images of that class."
        )
    n_taken = math.ceil(share * n)  # scikit-learn's rounding for a float test_size
    if n_taken < len(classes) or n - n_taken < len(classes):
        raise UserError(
            f"a {what} of {share:g} x {n} images cannot hold every one of {len(classes)} classes on both sides; "
            f"use more images or a fraction nearer 0.5."
        )
    return _stratified_draw(labels, n_taken, seed)


def _stratified_draw(labels: np.ndarray, n_taken: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's StratifiedShuffleSplit, one split: the same RandomState calls in the same
    order, so the same sets (its final shuffles of each side are left out: the sides are sorted)."""
    rng = np.random.RandomState(seed)
    classes, inverse, class_counts = np.unique(labels, return_inverse=True, return_counts=True)
    by_class = np.split(np.argsort(inverse.reshape(-1), kind="stable"), np.cumsum(class_counts)[:-1])
    kept_per_class = _approximate_mode(class_counts, len(labels) - n_taken, rng)
    taken_per_class = _approximate_mode(class_counts - kept_per_class, n_taken, rng)
    kept: list[int] = []
    taken: list[int] = []
    for members, n_kept, n_drawn, size in zip(by_class, kept_per_class, taken_per_class, class_counts):
        order = members.take(rng.permutation(size), mode="clip")
        kept.extend(order[:n_kept])
        taken.extend(order[n_kept : n_kept + n_drawn])
    return np.sort(np.asarray(kept, dtype=np.int64)), np.sort(np.asarray(taken, dtype=np.int64))


def _approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """scikit-learn's approximate mode of the multivariate hypergeometric: draws per class, the
    remainders' ties broken by `rng`."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (tied,) = np.where(remainder == value)
            add_now = min(len(tied), need_to_add)
            floored[rng.choice(tied, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


@dataclass(frozen=True)
class Split:
    """Which training-pool images train and which validate; saved with a run so a resume reuses it."""

    train_indices: np.ndarray  # int64, sorted indices into dataset.train_images
    val_indices: np.ndarray  # int64, sorted, disjoint from train_indices
    seed: int
    val_fraction: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "train_indices", np.asarray(self.train_indices, dtype=np.int64))
        object.__setattr__(self, "val_indices", np.asarray(self.val_indices, dtype=np.int64))

    # Arrays make the generated __eq__ ambiguous; compare contents instead.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Split):
            return NotImplemented
        return (
            self.seed == other.seed
            and self.val_fraction == other.val_fraction
            and np.array_equal(self.train_indices, other.train_indices)
            and np.array_equal(self.val_indices, other.val_indices)
        )

    def __hash__(self) -> int:
        return hash((self.seed, self.val_fraction, self.train_indices.tobytes(), self.val_indices.tobytes()))


def make_split(labels: torch.Tensor | np.ndarray, *, val_fraction: float = 0.15, seed: int) -> Split:
    """A stratified train/validation split of the training pool, the same for the same seed."""
    check_fraction("val_fraction", val_fraction)
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    train, val = stratified_partition(np.asarray(labels), float(val_fraction), seed=seed, what="validation set")
    return Split(train_indices=train, val_indices=val, seed=int(seed), val_fraction=float(val_fraction))


def save_split(split: Split, path: Path | str) -> None:
    """Write `split` as .npz atomically: a crash leaves the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        honour_umask(fd)
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f,
                train_indices=split.train_indices,
                val_indices=split.val_indices,
                seed=np.int64(split.seed),
                val_fraction=np.float64(split.val_fraction),
            )
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def load_split(path: Path | str) -> Split:
    """Read a split written by `save_split`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"split file {path} does not exist; restore it, or start a new run.")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return Split(
                train_indices=npz["train_indices"],
                val_indices=npz["val_indices"],
                seed=int(npz["seed"]),
                val_fraction=float(npz["val_fraction"]),
            )
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise UserError(
            f"{path} is not a split file written by cnnsearch ({err}); restore it or start a new run."
        ) from err


def subsample(dataset: Dataset, n: int, *, seed: int) -> Dataset:
    """A stratified subset of `n` training images (test set untouched), for quick searches.

    Class shares are kept to within one image; `n` at least the pool size returns `dataset`.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UserError(f"the subsample size must be a positive whole number, but got {n!r}.")
    labels = dataset.train_labels.cpu().numpy()
    total = len(labels)
    if n >= total:
        return dataset
    if n < dataset.num_classes:
        raise UserError(
            f"a subsample of {n} images cannot hold all {dataset.num_classes} classes; ask for at least {dataset.num_classes}."
        )
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    # Largest-remainder allocation keeps every class within one image of its exact share.
    exact = counts * (n / total)
    quota = np.floor(exact).astype(np.int64)
    remainder = exact - quota
    order = np.lexsort((rng.random(len(classes)), -remainder))
    quota[order[: n - int(quota.sum())]] += 1
    chosen = [rng.choice(np.flatnonzero(labels == c), size=int(q), replace=False) for c, q in zip(classes, quota)]
    keep = torch.from_numpy(np.sort(np.concatenate(chosen)).astype(np.int64))
    return replace(dataset, train_images=dataset.train_images[keep], train_labels=dataset.train_labels[keep])
