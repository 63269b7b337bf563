"""Owns the common `Dataset` (uint8 images, int64 labels, a test set), its fingerprint, channel
conversion, resizing, and where dataset files are looked for (data dir, the user cache,
Debian's dataset packages) and downloaded.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cnnsearch.errors import UserError
from cnnsearch.run.folder import honour_umask

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
                raise ValueError(f"{what}_images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
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


def check_fraction(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        raise UserError(f"`0 < {name} < 1` must hold, but got {name}={value!r}.")


def _resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 (N, C, H, W) batch to (size, size); antialiased so shrinking doesn't alias."""
    out = torch.empty((images.shape[0], images.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, images.shape[0], _RESIZE_CHUNK):
        chunk = images[start : start + _RESIZE_CHUNK].float()
        resized = torch.nn.functional.interpolate(
            chunk, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
        out[start : start + _RESIZE_CHUNK] = resized.round_().clamp_(0, 255).to(torch.uint8)
    return out


def cache_root() -> Path:
    # Resolved at call time so HOME set by a test (or a container) is honoured.
    return Path.home() / ".cache" / "cnnsearch"


def search_roots(name: str, data_dir: str | Path | None, inner: str | None = None) -> list[Path]:
    """Folders to look in, in order: data_dir, data_dir/<name>, the user cache, the system share.

    `inner` is the folder an archive unpacks to (e.g. cifar-10-batches-py); each root is also
    tried with it appended.
    """
    bases: list[Path] = []
    if data_dir is not None:
        base = Path(data_dir).expanduser()
        bases += [base, base / name]
    bases += [cache_root() / name, SYSTEM_DATA_ROOT / name]
    roots: list[Path] = []
    for base in bases:
        for root in (base, base / inner) if inner else (base,):
            if root not in roots:
                roots.append(root)
    return roots


def download_file(url: str, dest: Path, md5: str) -> None:
    """Fetch `url` into `dest` via a temp file, so an interrupted download never looks complete."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    honour_umask(fd)
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
