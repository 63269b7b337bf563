"""Owns the folder source: one sub-folder per class of image files (`--data folder:PATH`)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from cnnsearch.data.dataset import DataWarning
from cnnsearch.errors import UserError
from cnnsearch.words import count

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})


def load_folder(
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
    if len(classes) < 2:
        raise UserError(
            f"image folder {path} has only one class sub-folder ('{classes[0]}'), but a classifier needs at least 2; "
            f"put the images of each class in their own sub-folder"
        )
    files_per_class: list[list[Path]] = []
    for name in classes:
        files = sorted(
            p
            for p in (path / name).iterdir()
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
        warnings.warn(
            f"skipped {count(len(skipped), 'unreadable image file')} in {path}: {shown}", DataWarning, stacklevel=3
        )
    if not pictures:
        raise UserError(f"no readable image in {path}; check that the files are PNG, JPEG, BMP, GIF or WEBP images.")
    counts = np.bincount(np.asarray(labels), minlength=len(classes))
    for name, images_of_class in zip(classes, counts):
        if images_of_class == 0:
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
