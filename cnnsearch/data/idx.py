"""Owns the IDX sources: MNIST and Fashion-MNIST (Debian's `dataset-fashion-mnist` installs the
latter under /usr/share/datasets/fashion-mnist).
"""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cnnsearch.data.dataset import Dataset, cache_root, download_file, search_roots
from cnnsearch.errors import UserError

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


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


IDX_SOURCES = {
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
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(dims)
    if len(raw) != header + expected:
        raise UserError(
            f"{path} holds {len(raw) - header} bytes of data but its header promises {expected}; "
            f"the file is truncated or corrupt, so replace it with the official file."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def load_idx(spec: str, source: _IdxSource, data_dir: str | Path | None, download: bool) -> Dataset:
    roots = search_roots(source.name, data_dir)
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
        root = cache_root() / source.name
        for file_name, md5 in source.md5.items():
            if not (root / file_name).is_file():
                download_file(source.base_url + file_name, root / file_name, md5)
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
        read_idx(path, magic)
        for path, (_, _, magic) in zip(files, _IDX_PARTS)  # type: ignore[arg-type]
    )
    for images, labels, img_path, lab_path in (
        (train_x, train_y, files[0], files[1]),
        (test_x, test_y, files[2], files[3]),
    ):
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
