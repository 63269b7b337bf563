"""Owns `load_dataset`: a `--data` spec to a `Dataset`, memoised per process, with a held-out
test share for sources that have no official test set.

The held-out share is fixed per dataset (drawn with a seed taken from the images and labels
themselves), never by a search's --seed: runs, forks and --from-run with other seeds all test
on the same images and train on none of them.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from cnnsearch.data.cifar import CIFAR_SOURCES, load_cifar
from cnnsearch.data.dataset import (
    _ALIASES,
    VALID_SPECS,
    Dataset,
    _resize_uint8,
    check_fraction,
    dataset_fingerprint,
)
from cnnsearch.data.digits import load_digits_dataset
from cnnsearch.data.folder import load_folder
from cnnsearch.data.idx import IDX_SOURCES, load_idx
from cnnsearch.data.split import stratified_partition, subsample
from cnnsearch.errors import UserError

if TYPE_CHECKING:
    from cnnsearch.data.split import Split
    from cnnsearch.run.folder import RunDir, RunInfo


def load_dataset(
    spec: str,
    *,
    data_dir: str | Path | None = None,
    image_size: int | None = None,
    download: bool = False,
    test_fraction: float = 0.2,
    test_seed: int | None = None,
) -> Dataset:
    """Load the dataset named by `spec` (see `VALID_SPECS`) as uint8 tensors.

    `image_size` resizes every image to a square of that side (needed for folders whose images
    differ in size). Sources without an official test set (digits, folders) hold out a
    stratified `test_fraction` share, the same for every search seed: `test_seed` None draws it
    with a seed derived from the data (`content_seed`); an int redraws the share that runs made
    before that used (their search seed), only to recognise such runs. Official test sets are
    used as they are.
    """
    check_fraction("test_fraction", test_fraction)
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise UserError(f"--image-size must be a positive whole number of pixels, but got {image_size!r}.")
    spec = spec.strip()
    if spec.startswith("folder:"):
        folder = spec[len("folder:") :].strip()
        if not folder:
            raise UserError("--data folder: needs a path after the colon, e.g. --data folder:/data/pets.")
        images, labels, names, resized = load_folder(Path(folder).expanduser(), image_size)
        dataset = _held_out_dataset(spec, images, labels, names, seed=test_seed, test_fraction=test_fraction)
        return replace(dataset, resized_from=resized)

    key = _ALIASES.get(spec.lower(), spec.lower())
    if key == "digits":
        images, labels, names = load_digits_dataset()
        dataset = _held_out_dataset(spec, images, labels, names, seed=test_seed, test_fraction=test_fraction)
    elif key in IDX_SOURCES:
        dataset = load_idx(spec, IDX_SOURCES[key], data_dir, download)
    elif key in CIFAR_SOURCES:
        dataset = load_cifar(spec, CIFAR_SOURCES[key], data_dir, download)
    else:
        close = difflib.get_close_matches(key, [s for s in VALID_SPECS if s != "folder:PATH"], n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"unknown dataset '{spec}'{hint}; use one of: {', '.join(VALID_SPECS)}.")
    if image_size is not None and dataset.input_shape[1:] != (image_size, image_size):
        dataset = replace(
            dataset,
            train_images=_resize_uint8(dataset.train_images, image_size),
            test_images=_resize_uint8(dataset.test_images, image_size),
            resized_from=(dataset.input_shape[1:],),
        )
    return dataset


def load_dataset_cached(
    spec: str,
    *,
    data_dir: str | Path | None = None,
    image_size: int | None = None,
    download: bool = False,
    test_fraction: float = 0.2,
    test_seed: int | None = None,
) -> Dataset:
    """`load_dataset`, memoised per process so a worker reads each dataset once.

    The returned tensors are shared between callers: treat them as read-only.
    """
    key_dir = None if data_dir is None else str(Path(data_dir).expanduser().resolve())
    return _load_dataset_memo(spec.strip(), key_dir, image_size, bool(download), float(test_fraction), test_seed)


@functools.lru_cache(maxsize=4)
def _load_dataset_memo(
    spec: str, data_dir: str | None, image_size: int | None, download: bool, test_fraction: float, test_seed: int | None
) -> Dataset:
    return load_dataset(
        spec,
        data_dir=data_dir,
        image_size=image_size,
        download=download,
        test_fraction=test_fraction,
        test_seed=test_seed,
    )


def content_seed(images: np.ndarray, labels: np.ndarray) -> int:
    """A seed that depends only on the data: the first 32 bits of a sha256 of labels and images."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(labels).astype(np.int64).tobytes())
    digest.update(np.ascontiguousarray(images).tobytes())
    return int(digest.hexdigest()[:8], 16)


def _held_out_dataset(
    spec: str,
    images: np.ndarray,
    labels: np.ndarray,
    names: tuple[str, ...],
    *,
    seed: int | None,
    test_fraction: float,
) -> Dataset:
    """A Dataset whose test set is a stratified `test_fraction` share of all the images."""
    seed = content_seed(images, labels) if seed is None else seed
    keep, test = stratified_partition(labels, test_fraction, seed=seed, what="test set", names=names)
    return Dataset(
        name=spec,
        train_images=torch.from_numpy(np.ascontiguousarray(images[keep])),
        train_labels=torch.from_numpy(labels[keep].astype(np.int64)),
        test_images=torch.from_numpy(np.ascontiguousarray(images[test])),
        test_labels=torch.from_numpy(labels[test].astype(np.int64)),
        class_names=names,
        test_source="held-out",
    )


def load_run_dataset(info: RunInfo, *, consequence: str) -> Dataset:
    """The dataset exactly as a run loaded it: same source, size, test share and subset.

    The one load-and-check of a run's data (resume, workers, joining, export, rerun). Data that
    differs from the search's is refused, with `consequence` saying what would go wrong; the
    fingerprint in run.json is that of the dataset as loaded, before any subset is taken.
    """
    dataset = load_dataset_cached(info.data, data_dir=info.data_dir, image_size=info.image_size)
    if info.input_shape and list(dataset.input_shape) != list(info.input_shape):
        raise UserError(
            f"{info.data} now gives {'x'.join(map(str, dataset.input_shape))} images but run {info.name!r} used "
            f"{'x'.join(map(str, info.input_shape))}; restore the data the run was searched on"
        )
    if info.data_fingerprint and info.data_fingerprint != dataset_fingerprint(dataset):
        if dataset.test_source == "held-out" and _is_seeded_test_share(info):
            raise UserError(
                f"run {info.name!r} was made before the test share of {info.data} was fixed per dataset (its test "
                f"share followed --seed {info.split_seed}, so other runs may have trained on it); start a new run "
                f"on {info.data}"
            )
        raise UserError(
            f"the data of run {info.name!r} ({info.data}) changed since the search started; {consequence}; "
            f"restore the data, or start a new run on the new data"
        )
    if info.subset:
        dataset = subsample(dataset, info.subset, seed=info.split_seed)
    return dataset


def _is_seeded_test_share(info: RunInfo) -> bool:
    """True when the run's fingerprint is that of the test share drawn with its search seed."""
    legacy = load_dataset(info.data, data_dir=info.data_dir, image_size=info.image_size, test_seed=info.split_seed)
    return dataset_fingerprint(legacy) == info.data_fingerprint


def load_run_split(run: RunDir, info: RunInfo, dataset: Dataset, *, fix: str) -> Split:
    """The run's train/validation split; a lost split.npz is rebuilt from the run's seed where
    that gives exactly the split it recorded (a `Notice` says so), else refused.

    `dataset` is `load_run_dataset(info)`; `fix` ends the refusal with what this command needs
    it for ("restore it to resume run 'x', ...").
    """
    import warnings

    from cnnsearch.data.split import load_split, make_split, save_split
    from cnnsearch.errors import Notice

    if run.split_file.is_file():
        return load_split(run.split_file)
    split = make_split(dataset.train_labels, val_fraction=info.val_fraction, seed=info.split_seed)
    rebuilt = {"train": len(split.train_indices), "val": len(split.val_indices)}
    recorded = {key: info.split_sizes.get(key) for key in rebuilt}
    if rebuilt != recorded:
        gives = f"{rebuilt['val']} validation images" if rebuilt["val"] != recorded["val"] else ""
        gives = gives or f"{rebuilt['train']} training images"
        records = recorded["val"] if rebuilt["val"] != recorded["val"] else recorded["train"]
        raise UserError(
            f"{run.split_file} is missing and cannot be rebuilt exactly: the run's seed gives {gives}, "
            f"but run.json records {records}; {fix}"
        )
    save_split(split, run.split_file)
    warnings.warn(
        Notice(
            f"rebuilt {run.split_file} from the run's seed {info.split_seed} (validation fraction {info.val_fraction:g})"
        ),
        stacklevel=2,
    )
    return split
