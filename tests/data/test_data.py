"""Tests for cnnsearch.data: every loader on tiny files written here, splits, device copies."""

from __future__ import annotations

import gzip
import pickle
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnsearch.data import dataset as data_roots
from cnnsearch.data.dataset import Dataset, DataWarning, dataset_fingerprint, to_channels
from cnnsearch.data.device import full_train_device_data, normalization_stats, to_device
from cnnsearch.data.idx import FASHION_MNIST_CLASSES
from cnnsearch.data.load import load_dataset, load_dataset_cached
from cnnsearch.data.split import load_split, make_split, save_split, subsample
from cnnsearch.errors import UserError


@pytest.fixture(autouse=True)
def isolated_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep real data in ~/.cache or /usr/share/datasets from leaking into any test."""
    monkeypatch.setattr(data_roots, "SYSTEM_DATA_ROOT", tmp_path / "system")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


# --------------------------------------------------------------------------- helpers


def write_idx(path: Path, array: np.ndarray, *, magic: int | None = None, gz: bool = False) -> None:
    ndim = array.ndim
    magic = 0x0800 + ndim if magic is None else magic
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def write_mnist_like(
    folder: Path,
    *,
    n_train: int = 30,
    n_test: int = 12,
    h: int = 5,
    w: int = 4,
    dot_names: bool = False,
    gz: bool = True,
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images": rng.integers(0, 256, (n_train, h, w), dtype=np.uint8),
        "train-labels": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images": rng.integers(0, 256, (n_test, h, w), dtype=np.uint8),
        "t10k-labels": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for stem, array in arrays.items():
        kind = "idx3" if array.ndim == 3 else "idx1"
        sep = "." if dot_names else "-"
        # Mix compressed and plain files in one folder: both must be read.
        use_gz = gz and stem.startswith("train")
        write_idx(folder / f"{stem}{sep}{kind}-ubyte{'.gz' if use_gz else ''}", array, gz=use_gz)
    return arrays


def random_dataset(n_per_class: tuple[int, ...] = (40, 25, 15), channels: int = 3, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    labels = np.concatenate([np.full(k, c) for c, k in enumerate(n_per_class)]).astype(np.int64)
    rng.shuffle(labels)
    n = len(labels)
    images = rng.integers(0, 256, (n, channels, 6, 5), dtype=np.uint8)
    return Dataset(
        name="test",
        train_images=torch.from_numpy(images),
        train_labels=torch.from_numpy(labels),
        test_images=torch.from_numpy(images[:7].copy()),
        test_labels=torch.from_numpy(labels[:7].copy()),
        class_names=tuple(f"c{i}" for i in range(len(n_per_class))),
        test_source="held-out",
    )


# --------------------------------------------------------------------------- digits


def test_digits_loads_as_uint8_with_held_out_test() -> None:
    ds = load_dataset("digits", test_fraction=0.2)
    assert ds.input_shape == (1, 8, 8)
    assert ds.num_classes == 10
    assert ds.train_images.dtype == torch.uint8 and ds.train_labels.dtype == torch.int64
    assert ds.test_source == "held-out"
    assert len(ds.train_labels) + len(ds.test_labels) == 1797
    assert len(ds.test_labels) == 360  # ceil(0.2 * 1797)
    assert int(ds.train_images.max()) == 255  # 16 maps to 255
    assert set(ds.test_labels.tolist()) == set(range(10))


# --------------------------------------------------------------------------- IDX


def test_idx_gzip_and_plain_files_load(tmp_path: Path) -> None:
    arrays = write_mnist_like(tmp_path / "fm")
    ds = load_dataset("fashion-mnist", data_dir=tmp_path / "fm")
    assert ds.train_images.shape == (30, 1, 5, 4)
    assert ds.test_images.shape == (12, 1, 5, 4)
    assert ds.class_names == FASHION_MNIST_CLASSES
    assert ds.class_names[0] == "T-shirt/top"
    assert ds.test_source == "official"
    np.testing.assert_array_equal(ds.train_images[:, 0].numpy(), arrays["train-images"])
    np.testing.assert_array_equal(ds.train_labels.numpy(), arrays["train-labels"])
    np.testing.assert_array_equal(ds.test_images[:, 0].numpy(), arrays["t10k-images"])
    assert ds.test_labels.dtype == torch.int64


def test_idx_dot_names_in_named_subfolder(tmp_path: Path) -> None:
    # data_dir/<name> is searched too, and "train-images.idx3-ubyte" is accepted.
    arrays = write_mnist_like(tmp_path / "mnist", dot_names=True, gz=False)
    ds = load_dataset("mnist", data_dir=tmp_path)
    assert ds.class_names == tuple(str(i) for i in range(10))
    np.testing.assert_array_equal(ds.test_labels.numpy(), arrays["t10k-labels"])


def test_idx_found_in_user_cache(tmp_path: Path) -> None:
    write_mnist_like(tmp_path / "home" / ".cache" / "cnnsearch" / "fashion-mnist")
    assert load_dataset("fashion-mnist").train_images.shape == (30, 1, 5, 4)


def test_idx_wrong_magic_names_the_file(tmp_path: Path) -> None:
    write_mnist_like(tmp_path)
    bad = tmp_path / "t10k-labels-idx1-ubyte"
    write_idx(bad, np.zeros(12, dtype=np.uint8), magic=2051)
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte") as err:
        load_dataset("fashion-mnist", data_dir=tmp_path)
    assert "magic number 2051, expected 2049" in str(err.value)


def test_idx_missing_files_say_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        load_dataset("fashion-mnist", data_dir=tmp_path / "nope")
    message = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "--download" in message and "--data-dir DIR" in message
    assert str(tmp_path / "nope") in message
    assert str(tmp_path / "system" / "fashion-mnist") in message


# --------------------------------------------------------------------------- CIFAR


def _write_cifar_batch(path: Path, data_rows: np.ndarray, labels: list[int], labels_key: str) -> None:
    with path.open("wb") as f:
        # Official files were pickled by Python 2: bytes keys.
        pickle.dump({b"data": data_rows, labels_key.encode(): labels, b"batch_label": b"x"}, f)


def test_cifar10_batch_folder_loads(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    rows = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rows[name] = rng.integers(0, 256, (4, 3072), dtype=np.uint8)
        _write_cifar_batch(folder / name, rows[name], [0, 1, 2, 9], "labels")
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    with (folder / "batches.meta").open("wb") as f:
        pickle.dump({b"label_names": names, b"num_cases_per_batch": 4}, f)

    ds = load_dataset("cifar10", data_dir=tmp_path)  # finds the inner folder itself
    assert ds.train_images.shape == (20, 3, 32, 32)
    assert ds.test_images.shape == (4, 3, 32, 32)
    assert ds.class_names[1] == "automobile" and ds.num_classes == 10
    # Row layout: 1024 red values, then green, then blue, each 32x32 row-major.
    first = rows["data_batch_1"][0]
    np.testing.assert_array_equal(ds.train_images[0, 0].numpy(), first[:1024].reshape(32, 32))
    np.testing.assert_array_equal(ds.train_images[0, 2].numpy(), first[2048:].reshape(32, 32))
    np.testing.assert_array_equal(ds.train_images[4, 0].numpy(), rows["data_batch_2"][0][:1024].reshape(32, 32))
    assert ds.train_labels.tolist()[:4] == [0, 1, 2, 9]
    assert ds.test_source == "official"


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rows = np.zeros((3, 3072), dtype=np.uint8)
    _write_cifar_batch(folder / "train", rows, [5, 99, 0], "fine_labels")
    _write_cifar_batch(folder / "test", rows[:2], [1, 2], "fine_labels")
    with (folder / "meta").open("wb") as f:
        pickle.dump({"fine_label_names": [f"n{i}" for i in range(100)], "coarse_label_names": ["x"] * 20}, f)
    ds = load_dataset("cifar100", data_dir=folder)
    assert ds.num_classes == 100
    assert ds.train_labels.tolist() == [5, 99, 0]


def test_cifar_missing_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--download"):
        load_dataset("cifar10", data_dir=tmp_path)


# --------------------------------------------------------------------------- folders


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_folder_mixed_gray_rgb_with_corrupt_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    gray = {}
    for i in range(5):
        gray[i] = rng.integers(0, 256, (6, 6), dtype=np.uint8)
        _save(tmp_path / "cats" / f"{i}.png", gray[i])
        _save(tmp_path / "dogs" / f"{i}.png", rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    (tmp_path / "cats" / "corrupt.png").write_bytes(b"not an image at all")
    (tmp_path / "cats" / "notes.txt").write_text("ignored: not an image suffix")

    with pytest.warns(DataWarning, match=r"skipped 1 unreadable image file in .*: cats/corrupt\.png") as record:
        ds = load_dataset(f"folder:{tmp_path}", test_fraction=0.2)
    assert len(record) == 1
    assert ds.class_names == ("cats", "dogs")
    assert ds.input_shape == (3, 6, 6)
    assert len(ds.train_labels) + len(ds.test_labels) == 10
    assert ds.test_source == "held-out"
    assert sorted(ds.test_labels.tolist()) == [0, 1]
    # Grayscale images became RGB with three equal channels.
    cats = torch.cat([ds.train_images[ds.train_labels == 0], ds.test_images[ds.test_labels == 0]])
    assert torch.equal(cats[:, 0], cats[:, 1]) and torch.equal(cats[:, 1], cats[:, 2])
    assert {bytes(c[0].numpy().tobytes()) for c in cats} == {g.tobytes() for g in gray.values()}


def test_folder_all_gray_is_one_channel_and_resizes(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        for i in range(5):
            _save(tmp_path / cls / f"{i}.png", np.full((4 + i, 7), 100, dtype=np.uint8))
    with pytest.raises(UserError, match="--image-size N"):
        load_dataset(f"folder:{tmp_path}")
    ds = load_dataset(f"folder:{tmp_path}", image_size=8)
    assert ds.input_shape == (1, 8, 8)
    assert int(ds.train_images.min()) == int(ds.train_images.max()) == 100
    assert ds.resized_from == ((4, 7), (5, 7), (6, 7), (7, 7), (8, 7))  # (H, W): none was 8x8 already


def test_resized_from_names_the_sizes_image_size_changed() -> None:
    assert load_dataset("digits").resized_from == ()
    assert load_dataset("digits", image_size=8).resized_from == ()
    assert load_dataset("digits", image_size=12).resized_from == ((8, 8),)


def test_folder_empty_class_is_named(tmp_path: Path) -> None:
    for i in range(3):
        _save(tmp_path / "full" / f"{i}.png", np.zeros((4, 4), dtype=np.uint8))
    (tmp_path / "hollow").mkdir()
    with pytest.raises(UserError, match="hollow"):
        load_dataset(f"folder:{tmp_path}")


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'missing'}")
    with pytest.raises(UserError, match="no class sub-folders"):
        load_dataset(f"folder:{tmp_path}")
    for name in ("x", "y"):  # two classes: one class is refused before any image is read
        (tmp_path / name).mkdir()
        (tmp_path / name / "bad.png").write_bytes(b"junk")
    with pytest.warns(DataWarning), pytest.raises(UserError, match="no readable image"):
        load_dataset(f"folder:{tmp_path}")


def test_unknown_spec_lists_valid_ones() -> None:
    with pytest.raises(UserError) as err:
        load_dataset("cifar11")
    message = str(err.value)
    assert "unknown dataset 'cifar11'" in message
    for spec in ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "folder:PATH"):
        assert spec in message


def test_bad_fractions_are_user_errors() -> None:
    with pytest.raises(UserError, match="test_fraction"):
        load_dataset("digits", test_fraction=1.5)
    with pytest.raises(UserError, match="val_fraction"):
        make_split(np.zeros(10), val_fraction=0.0, seed=0)


def test_cached_loader_returns_same_object() -> None:
    a = load_dataset_cached("digits", test_fraction=0.3)
    assert load_dataset_cached("digits", test_fraction=0.3) is a
    assert load_dataset_cached("digits", test_fraction=0.25) is not a


# --------------------------------------------------------------------------- splits


def test_split_is_stratified_disjoint_and_deterministic(tmp_path: Path) -> None:
    labels = np.array([0] * 50 + [1] * 30 + [2] * 20)
    np.random.default_rng(0).shuffle(labels)
    split = make_split(torch.from_numpy(labels), val_fraction=0.2, seed=7)

    assert split.train_indices.dtype == np.int64 and split.val_indices.dtype == np.int64
    assert np.all(np.diff(split.train_indices) > 0) and np.all(np.diff(split.val_indices) > 0)
    assert not set(split.train_indices) & set(split.val_indices)
    assert len(split.train_indices) + len(split.val_indices) == len(labels)
    for c, count in zip(*np.unique(labels, return_counts=True)):
        in_val = int((labels[split.val_indices] == c).sum())
        assert abs(in_val - 0.2 * count) <= 1

    assert make_split(labels, val_fraction=0.2, seed=7) == split
    other = make_split(labels, val_fraction=0.2, seed=8)
    assert not np.array_equal(other.val_indices, split.val_indices)

    path = tmp_path / "run" / "split.npz"
    save_split(split, path)
    loaded = load_split(path)
    assert loaded == split
    np.testing.assert_array_equal(loaded.train_indices, split.train_indices)
    assert (loaded.seed, loaded.val_fraction) == (7, 0.2)
    assert [p.name for p in path.parent.iterdir()] == ["split.npz"]  # no temp file left


def test_load_split_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_split(tmp_path / "none.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(UserError, match="junk.npz"):
        load_split(tmp_path / "junk.npz")


def test_split_too_small_is_user_error() -> None:
    with pytest.raises(UserError, match="at least 2 per class"):
        make_split(np.array([0, 0, 0, 1]), seed=0)


def test_subsample_is_stratified() -> None:
    ds = random_dataset((60, 30, 10))
    small = subsample(ds, 20, seed=0)
    assert len(small.train_labels) == 20
    assert torch.equal(small.test_images, ds.test_images)
    counts = np.bincount(small.train_labels.numpy(), minlength=3)
    for got, full in zip(counts, (60, 30, 10)):
        assert abs(got - full * 20 / 100) <= 1
    assert subsample(ds, 20, seed=0).train_images.equal(small.train_images)
    assert subsample(ds, 1000, seed=0) is ds


# --------------------------------------------------------------------------- device data


def test_to_device_stats_match_numpy() -> None:
    ds = random_dataset()
    split = make_split(ds.train_labels, val_fraction=0.25, seed=0)
    dd = to_device(ds, split, "cpu")
    train = ds.train_images.numpy()[split.train_indices].astype(np.float64) / 255.0
    np.testing.assert_allclose(dd.mean.numpy(), train.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(dd.std.numpy(), train.std(axis=(0, 2, 3)), rtol=1e-6)
    assert dd.mean.dtype == torch.float32
    assert dd.train_x.dtype == torch.uint8 and len(dd.val_y) == len(split.val_indices)
    assert torch.equal(dd.val_y, ds.train_labels[torch.from_numpy(split.val_indices)])
    assert dd.input_shape == (3, 6, 5) and dd.num_classes == 3

    batch = dd.train_x[:8]
    expected = (batch.double() / 255 - dd.mean.double().view(1, -1, 1, 1)) / dd.std.double().view(1, -1, 1, 1)
    out = dd.normalize(batch)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
    out_cl = dd.normalize(batch, channels_last=True)
    assert out_cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out_cl, out)


def test_normalization_stats_floor_constant_channel() -> None:
    images = torch.full((4, 2, 3, 3), 51, dtype=torch.uint8)
    mean, std = normalization_stats(images)
    assert mean == pytest.approx([0.2, 0.2])
    assert std == [1e-3, 1e-3]


def test_full_train_uses_whole_pool_and_test_set() -> None:
    ds = random_dataset()
    dd = full_train_device_data(ds, "cpu")
    assert torch.equal(dd.train_x, ds.train_images)
    assert torch.equal(dd.val_x, ds.test_images) and torch.equal(dd.val_y, ds.test_labels)


def test_fingerprint_changes_with_any_image_label_shape_or_name() -> None:
    ds = random_dataset()
    base = dataset_fingerprint(ds)
    assert base == dataset_fingerprint(random_dataset())
    assert re.fullmatch(r"[0-9a-f]{16}", base)
    pixel = ds.train_images.clone()
    pixel[5, 1, 2, 3] ^= 1
    test_pixel = ds.test_images.clone()
    test_pixel[-1, 0, 0, 0] ^= 1
    label = ds.train_labels.clone()
    label[0] = (label[0] + 1) % 3
    changed = [
        replace(ds, train_images=pixel),
        replace(ds, test_images=test_pixel),
        replace(ds, train_labels=label),
        replace(ds, class_names=("c0", "c1", "c9")),
        # The same bytes in another shape are other images.
        replace(ds, train_images=ds.train_images.reshape(-1, 3, 5, 6), test_images=ds.test_images.reshape(-1, 3, 5, 6)),
    ]
    assert all(dataset_fingerprint(other) != base for other in changed)


def test_to_channels_matches_pillow() -> None:
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (4, 9, 7, 3), dtype=np.uint8)
    images = torch.from_numpy(rgb.transpose(0, 3, 1, 2).copy())
    gray = to_channels(images, 1)
    expected = np.stack([np.asarray(Image.fromarray(image).convert("L")) for image in rgb])[:, None]
    assert gray.dtype == torch.uint8 and np.array_equal(gray.numpy(), expected)
    colour = to_channels(gray, 3)
    assert colour.shape == (4, 3, 9, 7) and all(torch.equal(colour[:, c], gray[:, 0]) for c in range(3))
    assert torch.equal(to_channels(colour, 1), gray)  # a grey pixel keeps its value
    assert to_channels(gray, 1) is gray


def test_stale_split_is_user_error() -> None:
    ds = random_dataset()
    split = make_split(np.arange(500) % 3, seed=0)
    with pytest.raises(UserError, match="start a new run"):
        to_device(ds, split, "cpu")
