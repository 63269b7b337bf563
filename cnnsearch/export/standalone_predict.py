"""Classify images with the model in this folder; needs only numpy, pillow and onnxruntime.

    python predict.py IMAGE_OR_FOLDER [...] [--format table|csv]

Written by `cnnsearch export` next to model.onnx and model.json. Folders are searched
recursively for images; each image is converted to the model's channels (L or RGB), resized
to its height x width, normalised as (x / 255 - mean) / std with the mean and std in
model.json, run through model.onnx, and printed with its most probable class. A bad input
(a missing file, a file that is not an image, no model.onnx) is one line on stderr and exit 2.

The preprocessing is that of `cnnsearch predict` (cnnsearch/predict.py), line for line; a test
runs both on the same images. This file is copied verbatim from the cnnsearch package
(cnnsearch/export/standalone_predict.py) and must never import cnnsearch or torch.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import json
import sys
from pathlib import Path
from typing import Any

# The suffixes cnnsearch reads from folders (cnnsearch.predict.IMAGE_SUFFIXES).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
BATCH_SIZE = 256  # images per forward pass
NEEDS = {"numpy": "numpy", "PIL": "pillow", "onnxruntime": "onnxruntime"}  # module -> pip name
META_FILE, ONNX_FILE = "model.json", "model.onnx"


class BadInput(Exception):
    """A problem with the model folder or the images: one line on stderr, exit 2."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="predict.py",
        description="Classify images with the exported model beside this script (numpy, pillow, onnxruntime only).",
    )
    parser.add_argument("images", nargs="+", type=Path, help="image files or folders (searched recursively)")
    parser.add_argument("--format", choices=("table", "csv"), default="table", help="an aligned table, or csv")
    parser.add_argument(
        "--model",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="folder with model.json and model.onnx (default: the folder of this script)",
    )
    args = parser.parse_args(argv)
    try:
        _require_packages()
        rows = classify(args.model, args.images)
    except BadInput as error:
        print(f"predict.py: {error}", file=sys.stderr)
        return 2
    sys.stdout.write(as_csv(rows) if args.format == "csv" else as_table(rows))
    return 0


def _require_packages() -> None:
    missing = [pip_name for module, pip_name in NEEDS.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise BadInput(f"needs {', '.join(missing)}, which is not installed; pip install {' '.join(missing)}")


def classify(model_dir: Path, paths: list[Path]) -> list[tuple[str, str, float]]:
    """(path, class, probability of that class) for every image, in the order found."""
    import numpy as np

    meta = read_meta(model_dir)
    files = expand_paths(paths)
    session = _session(model_dir)
    name = session.get_inputs()[0].name
    channels, height, width = (int(size) for size in meta["input_shape"])
    class_names = [str(name) for name in meta["class_names"]]
    mean = np.asarray(meta["mean"], dtype=np.float32)
    std = np.asarray(meta["std"], dtype=np.float32)

    rows = []
    for start in range(0, len(files), BATCH_SIZE):
        chunk = files[start : start + BATCH_SIZE]
        images = np.stack([read_image(path, channels=channels, height=height, width=width) for path in chunk])
        logits = np.asarray(session.run(None, {name: normalise(images, mean, std)})[0], dtype=np.float64)
        probabilities = softmax(logits)
        for path, row in zip(chunk, probabilities):
            index = int(row.argmax())
            rows.append((str(path), class_names[index], float(row[index])))
    return rows


def read_meta(model_dir: Path) -> dict[str, Any]:
    path = model_dir / META_FILE
    if not path.is_file():
        raise BadInput(f"{model_dir} has no {META_FILE}; keep predict.py in the folder `cnnsearch export` wrote")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadInput(f"{path} is not valid JSON ({error}); export the model again") from None
    try:
        shape = [int(size) for size in meta["input_shape"]]
        usable = len(shape) == 3 and shape[0] in (1, 3) and len(meta["mean"]) == len(meta["std"]) == shape[0]
        usable = usable and len(meta["class_names"]) > 0
    except (KeyError, TypeError, ValueError):
        usable = False
    if not usable:
        raise BadInput(f"{path} does not describe a model predict.py can feed; export the model again")
    return meta


def _session(model_dir: Path) -> Any:
    import onnxruntime

    path = model_dir / ONNX_FILE
    if not path.is_file():
        raise BadInput(f"{model_dir} has no {ONNX_FILE}; export the model with --format onnx")
    try:
        return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types for a bad file
        text = str(error).strip()
        first = text.splitlines()[0] if text else type(error).__name__
        raise BadInput(f"{path} is not a model onnxruntime can load ({first}); export the model again") from None


def expand_paths(paths: list[Path]) -> list[Path]:
    """Files as given, folders expanded recursively to their images (sorted, hidden ones skipped)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in IMAGE_SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                raise BadInput(f"folder {path} holds no images ({_suffix_list()}); pass image files or folders")
            files += found
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise BadInput(_not_an_image(path))
            files.append(path)
        else:
            raise BadInput(f"{path} does not exist; pass image files or folders of images")
    return files


def _suffix_list() -> str:
    return ", ".join(suffix[1:] for suffix in IMAGE_SUFFIXES)


def _not_an_image(path: Path) -> str:
    return f"{path} is not an image predict.py can read ({_suffix_list()})"


def read_image(path: Path, *, channels: int, height: int, width: int) -> Any:
    """uint8 (C, H, W) array: converted to L or RGB and resized as the training folders were."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            picture = _to_mode(img, channels)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        # Pillow signals a bad file with any of these.
        raise BadInput(_not_an_image(path)) from None
    if picture.size != (width, height):
        picture = picture.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(picture, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _to_mode(img: Any, channels: int) -> Any:
    """L for 1-channel models, RGB for 3; 16-bit grayscale is scaled into 0..255."""
    import numpy as np
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or array.max() > 255 else 255.0
        img = Image.fromarray(np.clip(np.rint(array * (255.0 / top)), 0, 255).astype(np.uint8), mode="L")
    return img.convert("L" if channels == 1 else "RGB")


def normalise(images_uint8: Any, mean: Any, std: Any) -> Any:
    """float32 (x / 255 - mean) / std, computed as training does: x * (1 / (255 std)) - mean / std."""
    import numpy as np

    scale = (np.float32(1.0) / (np.float32(255.0) * std)).reshape(1, -1, 1, 1)
    shift = (-mean / std).reshape(1, -1, 1, 1)
    return (images_uint8.astype(np.float32) * scale + shift).astype(np.float32)


def softmax(logits: Any) -> Any:
    import numpy as np

    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def as_csv(rows: list[tuple[str, str, float]]) -> str:
    """The csv of `cnnsearch predict --format csv`: path,class,probability (6 decimals)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "class", "probability"])
    for path, class_name, probability in rows:
        writer.writerow([path, class_name, f"{probability:.6f}"])
    return buffer.getvalue()


def as_table(rows: list[tuple[str, str, float]]) -> str:
    """Path and class left-aligned, probability as a percentage right-aligned."""
    cells = [("path", "class", "probability")]
    cells += [(path, class_name, f"{probability:.2%}") for path, class_name, probability in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(3)]
    lines = [f"{path:<{widths[0]}}  {name:<{widths[1]}}  {prob:>{widths[2]}}" for path, name, prob in cells]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
