"""Owns datasets: turning a ``--data`` spec into uint8 tensors, the train/validation split,
and the copies that live on the training device.

Every source becomes a `Dataset` of uint8 (N, C, H, W) images with int64 labels plus a test set
(the official one, or a stratified held-out share when the source has none). `make_split`
carves a validation set out of the training pool; `to_device` moves train/val to the training
device once, still as uint8 (4x less memory than float), and `DeviceData.normalize` turns a
batch into floats on the fly.

Must not know: models, specs, search spaces, Optuna, Lightning, augmentation (see `augment`).
Imports numpy and torch; Pillow and scikit-learn are imported where they are used.
"""
from __future__ import annotations

import difflib
import functools
import gzip
import hashlib
import math
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnsearch.errors import UserError

# Where Debian's dataset packages put their files (dataset-fashion-mnist → <root>/fashion-mnist).
# A module constant so tests can point it at an empty folder.
SYSTEM_DATA_ROOT = Path("/usr/share/datasets")

VALID_SPECS = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "folder:PATH")
_ALIASES = {
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "cifar-10": "cifar10",
    "cifar-100": "cifar100",
}
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

_DOWNLOAD_TIMEOUT_S = 60  # per connection attempt, not per file
_RESIZE_CHUNK = 8192  # images per chunk when resizing whole datasets (bounds the float copy)
FINGERPRINT_CHARS = 16  # hex characters of the sha256 kept by `dataset_fingerprint`
# Pillow's integer ITU-R 601 luma (0.299, 0.587, 0.114 in 16-bit fixed point; they sum to 65536, so a
# grey pixel keeps its value): the same grey `predict` gets from Image.convert("L").
_LUMA_WEIGHTS = (19595, 38470, 7471)


class DataWarning(UserWarning):
    """Something in the data was skipped or changed, but loading went on (e.g. unreadable files)."""


@dataclass
class Dataset:
    """A whole dataset as uint8 tensors; the test set is touched only by the final evaluation."""

    name: str  # the --data spec it came from, e.g. "digits", "folder:/x"
    train_images: torch.Tensor  # uint8 (N, C, H, W): the official training pool
    train_labels: torch.Tensor  # int64 (N,)
    test_images: torch.Tensor  # uint8 (M, C, H, W): official test set or a held-out share
    test_labels: torch.Tensor  # int64 (M,)
    class_names: tuple[str, ...]
    test_source: str  # "official" or "held-out"
    resized_from: tuple[tuple[int, int], ...] = ()  # (H, W) sizes that image_size changed; () if none

    def __post_init__(self) -> None:
        # Programmer errors at a seam, not user input: fail loudly with the shapes involved.
        for what, images, labels in (
            ("train", self.train_images, self.train_labels),
            ("test", self.test_images, self.test_labels),
        ):
            if images.dtype != torch.uint8 or images.dim() != 4:
                raise ValueError(
                    f"{what}_images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
                )
            if labels.dtype != torch.int64 or labels.shape != (images.shape[0],):
                raise ValueError(
                    f"{what}_labels must be int64 ({images.shape[0]},), got {labels.dtype} {tuple(labels.shape)}"
                )
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise ValueError(
                f"train and test images differ in shape: {tuple(self.train_images.shape[1:])} "
                f"vs {tuple(self.test_images.shape[1:])}"
            )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.train_images.shape[1:]
        return int(c), int(h), int(w)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# --------------------------------------------------------------------------- loading


def load_dataset(
    spec: str,
    *,
    data_dir: str | Path | None = None,
    image_size: int | None = None,
    download: bool = False,
    seed: int = 0,
    test_fraction: float = 0.2,
) -> Dataset:
    """Load the dataset named by `spec` (see `VALID_SPECS`) as uint8 tensors.

    `image_size` resizes every image to a square of that side (needed for folders whose images
    differ in size). `seed` and `test_fraction` choose the held-out test share for sources
    without an official test set (digits, folders); official test sets are used as they are.
    """
    _check_fraction("test_fraction", test_fraction)
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise UserError(f"--image-size must be a positive whole number of pixels, but got {image_size!r}.")
    spec = spec.strip()
    if spec.startswith("folder:"):
        folder = spec[len("folder:"):].strip()
        if not folder:
            raise UserError("--data folder: needs a path after the colon, e.g. --data folder:/data/pets.")
        images, labels, names, resized = _load_folder(Path(folder).expanduser(), image_size)
        dataset = _held_out_dataset(spec, images, labels, names, seed=seed, test_fraction=test_fraction)
        return replace(dataset, resized_from=resized)

    key = _ALIASES.get(spec.lower(), spec.lower())
    if key == "digits":
        images, labels, names = _load_digits()
        dataset = _held_out_dataset(spec, images, labels, names, seed=seed, test_fraction=test_fraction)
    elif key in _IDX_SOURCES:
        dataset = _load_idx_dataset(spec, _IDX_SOURCES[key], data_dir, download)
    elif key in _CIFAR_SOURCES:
        dataset = _load_cifar_dataset(spec, _CIFAR_SOURCES[key], data_dir, download)
    else:
        close = difflib.get_close_matches(key, [s for s in VALID_SPECS if s != "folder:PATH"], n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(
            f"unknown dataset '{spec}'{hint}; use one of: {', '.join(VALID_SPECS)}."
        )
    if image_size is not None and dataset.input_shape[1:] != (image_size, image_size):
        dataset = replace(
            dataset,
            train_images=_resize_uint8(dataset.train_images, image_size),
            test_images=_resize_uint8(dataset.test_images, image_size),
            resized_from=(dataset.input_shape[1:],),
        )
    return dataset


def dataset_fingerprint(dataset: Dataset) -> str:
    """A short sha256 of the images, labels and class names: equal fingerprints, equal data.

    Stored with a run so that a resume or an export notices data that changed under it.
    """
    digest = hashlib.sha256()
    for tensor in (dataset.train_images, dataset.train_labels, dataset.test_images, dataset.test_labels):
        digest.update(repr((str(tensor.dtype), tuple(tensor.shape))).encode())
        digest.update(np.ascontiguousarray(tensor.cpu().numpy()))
    digest.update("\n".join(dataset.class_names).encode())
    return digest.hexdigest()[:FINGERPRINT_CHARS]


def to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 (N, C, H, W) images as grayscale (1 channel, Pillow's luma) or colour (3, grey repeated)."""
    have = images.shape[1]
    if have == channels:
        return images
    if (have, channels) == (1, 3):
        return images.expand(-1, 3, -1, -1).contiguous()
    if (have, channels) == (3, 1):
        weights = torch.tensor(_LUMA_WEIGHTS, dtype=torch.int32).view(1, 3, 1, 1)
        luma = (images.to(torch.int32) * weights).sum(dim=1, keepdim=True)
        return ((luma + 32768) >> 16).to(torch.uint8)  # round half up, as Pillow does
    raise ValueError(f"can convert between 1 and 3 channels only, but got {have} -> {channels}")


def load_dataset_cached(
    spec: str,
    *,
    data_dir: str | Path | None = None,
    image_size: int | None = None,
    download: bool = False,
    seed: int = 0,
    test_fraction: float = 0.2,
) -> Dataset:
    """`load_dataset`, memoised per process so a worker reads each dataset once.

    The returned tensors are shared between callers: treat them as read-only.
    """
    key_dir = None if data_dir is None else str(Path(data_dir).expanduser().resolve())
    return _load_dataset_memo(spec.strip(), key_dir, image_size, bool(download), int(seed), float(test_fraction))


@functools.lru_cache(maxsize=4)
def _load_dataset_memo(
    spec: str, data_dir: str | None, image_size: int | None, download: bool, seed: int, test_fraction: float
) -> Dataset:
    return load_dataset(
        spec, data_dir=data_dir, image_size=image_size, download=download, seed=seed, test_fraction=test_fraction
    )


def _check_fraction(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        raise UserError(f"`0 < {name} < 1` must hold, but got {name}={value!r}.")


def _held_out_dataset(
    spec: str, images: np.ndarray, labels: np.ndarray, names: tuple[str, ...], *, seed: int, test_fraction: float
) -> Dataset:
    """A Dataset whose test set is a stratified `test_fraction` share of all the images."""
    keep, test = _stratified_partition(labels, test_fraction, seed=seed, what="test set", names=names)
    return Dataset(
        name=spec,
        train_images=torch.from_numpy(np.ascontiguousarray(images[keep])),
        train_labels=torch.from_numpy(labels[keep].astype(np.int64)),
        test_images=torch.from_numpy(np.ascontiguousarray(images[test])),
        test_labels=torch.from_numpy(labels[test].astype(np.int64)),
        class_names=names,
        test_source="held-out",
    )


def _resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 (N, C, H, W) batch to (size, size); antialiased so shrinking doesn't alias."""
    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, images.shape[0], _RESIZE_CHUNK):
        chunk = images[start:start + _RESIZE_CHUNK].float()
        resized = torch.nn.functional.interpolate(
            chunk, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
        out[start:start + _RESIZE_CHUNK] = resized.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _cache_root() -> Path:
    # Resolved at call time so HOME set by a test (or a container) is honoured.
    return Path.home() / ".cache" / "cnnsearch"


def _search_roots(name: str, data_dir: str | Path | None, inner: str | None = None) -> list[Path]:
    """Folders to look in, in order: data_dir, data_dir/<name>, the user cache, the system share.

    `inner` is the folder an archive unpacks to (e.g. cifar-10-batches-py); each root is also
    tried with it appended.
    """
    bases: list[Path] = []
    if data_dir is not None:
        base = Path(data_dir).expanduser()
        bases += [base, base / name]
    bases += [_cache_root() / name, SYSTEM_DATA_ROOT / name]
    roots: list[Path] = []
    for base in bases:
        for root in (base, base / inner) if inner else (base,):
            if root not in roots:
                roots.append(root)
    return roots


def _download(url: str, dest: Path, md5: str) -> None:
    """Fetch `url` into `dest` via a temp file, so an interrupted download never looks complete."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as resp:
            while block := resp.read(1 << 20):
                digest.update(block)
                out.write(block)
        if digest.hexdigest() != md5:
            raise UserError(
                f"the download of {url} is corrupt (MD5 {digest.hexdigest()}, expected {md5}); run again with --download."
            )
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as err:
        raise UserError(
            f"could not download {url} ({err}); check the network, or copy the files by hand and pass --data-dir DIR."
        ) from err
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- digits


def _load_digits() -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no network

    bunch = load_digits()
    # Values are 0..16 counts of set pixels in a 4x4 block; stretch them onto 0..255.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    return images, labels, tuple(str(i) for i in range(10))


# --------------------------------------------------------------------------- IDX (MNIST-like)


@dataclass(frozen=True)
class _IdxSource:
    title: str  # how users know it, for messages
    name: str  # cache/system folder name
    base_url: str
    md5: dict[str, str]  # official .gz file → MD5
    class_names: tuple[str, ...]
    apt_package: str | None  # Debian package that installs it under SYSTEM_DATA_ROOT


# (stem, IDX kind, magic): magic = 0x0000_08_<ndim>, i.e. ubyte data with 3 or 1 dimensions.
_IDX_PARTS = (
    ("train-images", "idx3", 2051),
    ("train-labels", "idx1", 2049),
    ("t10k-images", "idx3", 2051),
    ("t10k-labels", "idx1", 2049),
)

_IDX_SOURCES = {
    "fashion-mnist": _IdxSource(
        title="Fashion-MNIST",
        name="fashion-mnist",
        # The official S3 website endpoint serves plain HTTP only; the MD5 check guards the bytes.
        base_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        class_names=FASHION_MNIST_CLASSES,
        apt_package="dataset-fashion-mnist",
    ),
    "mnist": _IdxSource(
        title="MNIST",
        name="mnist",
        base_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        class_names=tuple(str(i) for i in range(10)),
        apt_package=None,
    ),
}


def _find_idx_files(root: Path) -> list[Path | None]:
    """The four IDX files in `root` (None where missing), accepting -idx/.idx and optional .gz."""
    found: list[Path | None] = []
    for stem, kind, _ in _IDX_PARTS:
        hit = None
        for sep in ("-", "."):
            for suffix in ("", ".gz"):
                path = root / f"{stem}{sep}{kind}-ubyte{suffix}"
                if path.is_file():
                    hit = path
                    break
            if hit:
                break
        found.append(hit)
    return found


def _read_maybe_gzip(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":  # gzip magic: trust the bytes, not the file name
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise UserError(f"cannot read {path} ({err}); replace it with a fresh copy of the file.") from err
    return raw


def read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """Parse one IDX file (plain or gzip) into a uint8 array with the dimensions in its header."""
    raw = _read_maybe_gzip(path)
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else -1
    if magic != expected_magic:
        kind = "images" if expected_magic == 2051 else "labels"
        raise UserError(
            f"{path} is not an IDX {kind} file (magic number {magic}, expected {expected_magic}); "
            f"replace it with the official file."
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(dims)
    if len(raw) != header + expected:
        raise UserError(
            f"{path} holds {len(raw) - header} bytes of data but its header promises {expected}; "
            f"the file is truncated or corrupt, so replace it with the official file."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _load_idx_dataset(spec: str, source: _IdxSource, data_dir: str | Path | None, download: bool) -> Dataset:
    roots = _search_roots(source.name, data_dir)
    files = None
    partial: list[str] = []
    for root in roots:
        found = _find_idx_files(root)
        if all(found):
            files = found
            break
        if any(found):
            partial.append(f"{root} has only {sum(p is not None for p in found)} of the 4")
    if files is None and download:
        root = _cache_root() / source.name
        for file_name, md5 in source.md5.items():
            if not (root / file_name).is_file():
                _download(source.base_url + file_name, root / file_name, md5)
        files = _find_idx_files(root)
    if files is None or not all(files):
        names = ", ".join(f"{stem}-{kind}-ubyte[.gz]" for stem, kind, _ in _IDX_PARTS)
        ways = [f"run `apt-get install {source.apt_package}`"] if source.apt_package else []
        ways += ["run with --download", f"pass --data-dir DIR with the four IDX files ({names})"]
        note = f" ({'; '.join(partial)})" if partial else ""
        raise UserError(
            f"{source.title} files not found in {', '.join(str(r) for r in roots)}{note}; "
            f"to get them, {', or '.join(ways)}."
        )
    train_x, train_y, test_x, test_y = (
        read_idx(path, magic) for path, (_, _, magic) in zip(files, _IDX_PARTS)  # type: ignore[arg-type]
    )
    for images, labels, img_path, lab_path in ((train_x, train_y, files[0], files[1]), (test_x, test_y, files[2], files[3])):
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise UserError(
                f"{img_path} ({images.shape}) and {lab_path} ({labels.shape}) do not match image for label; "
                f"replace them with the official files."
            )
        if labels.size and int(labels.max()) >= len(source.class_names):
            raise UserError(
                f"{lab_path} has label {int(labels.max())} but {source.title} has {len(source.class_names)} classes; "
                f"replace it with the official file."
            )
    return Dataset(
        name=spec,
        train_images=torch.from_numpy(train_x[:, None]),
        train_labels=torch.from_numpy(train_y.astype(np.int64)),
        test_images=torch.from_numpy(test_x[:, None]),
        test_labels=torch.from_numpy(test_y.astype(np.int64)),
        class_names=source.class_names,
        test_source="official",
    )


# --------------------------------------------------------------------------- CIFAR


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


_CIFAR_SOURCES = {
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


def _load_cifar_dataset(spec: str, source: _CifarSource, data_dir: str | Path | None, download: bool) -> Dataset:
    needed = (*source.train_files, source.test_file, source.meta_file)
    roots = _search_roots(source.name, data_dir, inner=source.folder)
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
    cache = _cache_root() / source.name
    archive = cache / Path(source.url).name
    if not archive.is_file():
        _download(source.url, archive, source.md5)
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


# --------------------------------------------------------------------------- image folders


def _load_folder(
    path: Path, image_size: int | None
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], tuple[tuple[int, int], ...]]:
    """Read `path/<class>/<image>` with Pillow into uint8 (N, C, H, W), labels, class names and the
    (H, W) sizes that were resized to `image_size`."""
    from PIL import Image

    if not path.is_dir():
        raise UserError(f"image folder {path} does not exist; pass --data folder:PATH with one sub-folder per class.")
    classes = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise UserError(
            f"image folder {path} has no class sub-folders; put the images of each class in their own sub-folder."
        )
    files_per_class: list[list[Path]] = []
    for name in classes:
        files = sorted(
            p for p in (path / name).iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        )
        if not files:
            raise UserError(
                f"class folder {path / name} has no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                f"add images to it or remove it."
            )
        files_per_class.append(files)

    pictures: list[Image.Image] = []
    labels: list[int] = []
    skipped: list[str] = []
    for label, files in enumerate(files_per_class):
        for file in files:
            try:
                with Image.open(file) as img:
                    img.load()
                    pictures.append(_to_l_or_rgb(img))
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
                # Pillow signals a bad file with any of these; skipped files are reported below.
                skipped.append(str(file.relative_to(path)))
                continue
            labels.append(label)
    if skipped:
        shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        warnings.warn(f"skipped {len(skipped)} unreadable image file(s) in {path}: {shown}", DataWarning, stacklevel=3)
    if not pictures:
        raise UserError(f"no readable image in {path}; check that the files are PNG, JPEG, BMP, GIF or WEBP images.")
    counts = np.bincount(np.asarray(labels), minlength=len(classes))
    for name, count in zip(classes, counts):
        if count == 0:
            raise UserError(f"class folder {path / name} has no readable image; add readable images or remove it.")

    rgb = any(p.mode == "RGB" for p in pictures)
    sizes = {p.size for p in pictures}
    if image_size is None and len(sizes) > 1:
        few = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:3])
        raise UserError(
            f"images in {path} differ in size ({few}{', ...' if len(sizes) > 3 else ''}); "
            f"pass --image-size N to resize them all to N x N."
        )
    arrays = []
    for pic in pictures:
        if rgb and pic.mode != "RGB":
            pic = pic.convert("RGB")
        if image_size is not None and pic.size != (image_size, image_size):
            pic = pic.resize((image_size, image_size), Image.Resampling.BILINEAR)
        arr = np.asarray(pic, dtype=np.uint8)
        arrays.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
    images = np.stack(arrays)
    resized = tuple(sorted((h, w) for w, h in sizes if image_size is not None and (w, h) != (image_size, image_size)))
    return images, np.asarray(labels, dtype=np.int64), tuple(classes), resized


def _to_l_or_rgb(img: Any) -> Any:
    """Grayscale images become mode L, everything else RGB (alpha dropped, palettes expanded)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit grayscale: convert("L") would clip, so scale the full range into 0..255 instead.
        from PIL import Image

        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8), mode="L")
    if img.mode in ("1", "L", "LA", "F"):
        return img.convert("L")
    if img.mode == "P" and img.palette is not None and img.palette.mode == "L":
        return img.convert("L")
    return img.convert("RGB")


# --------------------------------------------------------------------------- splits


def _stratified_partition(
    labels: np.ndarray, share: float, *, seed: int, what: str, names: tuple[str, ...] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (kept, taken), `taken` a stratified `share`; both sorted int64."""
    from sklearn.model_selection import train_test_split

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
    kept, taken = train_test_split(np.arange(n), test_size=share, stratify=labels, random_state=seed, shuffle=True)
    return np.sort(kept).astype(np.int64), np.sort(taken).astype(np.int64)


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
    _check_fraction("val_fraction", val_fraction)
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    train, val = _stratified_partition(np.asarray(labels), float(val_fraction), seed=seed, what="validation set")
    return Split(train_indices=train, val_indices=val, seed=int(seed), val_fraction=float(val_fraction))


def save_split(split: Split, path: Path | str) -> None:
    """Write `split` as .npz atomically: a crash leaves the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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
        raise UserError(f"split file {path} does not exist; start a new run instead of resuming this one.")
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
    chosen = [
        rng.choice(np.flatnonzero(labels == c), size=int(q), replace=False) for c, q in zip(classes, quota)
    ]
    keep = torch.from_numpy(np.sort(np.concatenate(chosen)).astype(np.int64))
    return replace(dataset, train_images=dataset.train_images[keep], train_labels=dataset.train_labels[keep])


# --------------------------------------------------------------------------- device copies


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
        scale = (1.0 / (255.0 * self.std)).view(1, -1, 1, 1)
        shift = (-self.mean / self.std).view(1, -1, 1, 1)
        return x_uint8.to(torch.float32).mul_(scale).add_(shift)


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
    train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
    class_names: tuple[str, ...], device: str | torch.device,
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
        dataset.train_images[train], dataset.train_labels[train],
        dataset.train_images[val], dataset.train_labels[val],
        dataset.class_names, device,
    )


def full_train_device_data(dataset: Dataset, device: str | torch.device) -> DeviceData:
    """The whole training pool as train and the TEST set as val: for the final export only."""
    return _device_data(
        dataset.train_images, dataset.train_labels,
        dataset.test_images, dataset.test_labels,
        dataset.class_names, device,
    )
