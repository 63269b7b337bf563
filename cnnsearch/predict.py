"""Owns classifying image files with an exported model folder, and showing the predictions.

Images are read with Pillow, converted to the model's channels (L or RGB), resized to its
height x width when they differ, normalised with the mean and std saved in model.json, and
run in batches. The ONNX runtime path needs only model.json, model.onnx, onnxruntime, numpy
and Pillow: it must never import torch, so a deployment can leave torch out. The export
folder's own predict.py (export/standalone_predict.py, which cannot import cnnsearch) repeats
this preprocessing; tests/export/test_standalone_predict.py holds the two to one answer.

Must not know: training, runs, Optuna. Imports torch only inside the torch runtime.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnsearch.errors import UserError, first_line
from cnnsearch.words import count

# The suffixes `data` reads from folders (data.IMAGE_SUFFIXES); repeated here because data imports torch.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
RUNTIMES = ("torch", "onnx")
TEXT_FORMATS = ("csv", "json", "markdown")
BATCH_SIZE = 256  # images per forward pass
_META_KEYS = ("input_shape", "class_names", "mean", "std")


@dataclass(frozen=True)
class Prediction:
    path: Path
    class_name: str
    probability: float  # softmax probability of the predicted class
    class_index: int


def predict_paths(model_dir: Path, paths: Sequence[Path], *, runtime: str = "torch") -> list[Prediction]:
    """Classify image files (folders are searched recursively) with an exported model.

    Raises UserError for a missing model folder, model file or path, and for any file that is
    not an image Pillow can read.
    """
    import numpy as np

    if runtime not in RUNTIMES:
        raise UserError(f"--runtime {runtime!r} is not valid; choose one of {', '.join(RUNTIMES)}")
    model_dir = Path(model_dir)
    meta = read_meta(model_dir)
    files = expand_paths(paths)
    run_batch = _onnx_runner(model_dir) if runtime == "onnx" else _torch_runner(model_dir)
    channels, height, width = (int(size) for size in meta["input_shape"])
    class_names = [str(name) for name in meta["class_names"]]
    mean = np.asarray(meta["mean"], dtype=np.float32)
    std = np.asarray(meta["std"], dtype=np.float32)

    predictions: list[Prediction] = []
    for start in range(0, len(files), BATCH_SIZE):
        chunk = files[start : start + BATCH_SIZE]
        images = np.stack([read_image(path, channels=channels, height=height, width=width) for path in chunk])
        logits = np.asarray(run_batch(normalise(images, mean, std)), dtype=np.float64)
        probabilities = _softmax(logits)
        for path, row in zip(chunk, probabilities):
            index = int(row.argmax())
            predictions.append(
                Prediction(path=path, class_name=class_names[index], probability=float(row[index]), class_index=index)
            )
    return predictions


def read_meta(model_dir: Path) -> dict[str, Any]:
    """model.json of an export folder, checked for what prediction needs."""
    from cnnsearch.export.model_dir import META_FILE, read_model_meta

    meta = read_model_meta(model_dir, required=True)
    path = Path(model_dir) / META_FILE
    missing = [key for key in _META_KEYS if key not in meta]
    if missing:
        raise UserError(
            f"{path} lacks {', '.join(missing)}; it was not written by `cnnsearch export`, export the model again"
        )
    shape = meta["input_shape"]
    if (
        not isinstance(shape, list)
        or len(shape) != 3
        or int(shape[0]) not in (1, 3)
        or len(meta["mean"]) != int(shape[0])
        or len(meta["std"]) != int(shape[0])
    ):
        raise UserError(
            f"{path} has an input shape {shape!r} that prediction cannot feed (1 or 3 channels); export the model again"
        )
    return meta


def expand_paths(paths: Sequence[Path]) -> list[Path]:
    """Files as given, folders expanded recursively to their images (sorted, hidden ones skipped)."""
    files: list[Path] = []
    if not paths:
        raise UserError("no images given; pass image files or folders of images")
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in IMAGE_SUFFIXES
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                raise UserError(
                    f"folder {path} holds no images ({_suffix_list()}); pass image files or folders of images"
                )
            files += found
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise UserError(_not_an_image(path))
            files.append(path)
        else:
            raise UserError(f"{path} does not exist; pass image files or folders of images")
    return files


def _suffix_list() -> str:
    return ", ".join(suffix[1:] for suffix in IMAGE_SUFFIXES)


def _not_an_image(path: Path) -> str:
    return f"{path} is not an image cnnsearch can read ({_suffix_list()})"


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
        raise UserError(_not_an_image(path)) from None
    if picture.size != (width, height):
        picture = picture.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(picture, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _to_mode(img: Any, channels: int) -> Any:
    """L for 1-channel models, RGB for 3; 16-bit grayscale is scaled into 0..255 as `data` does."""
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


def _softmax(logits: Any) -> Any:
    import numpy as np

    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def require_module(module: str, *, needed_by: str, fix: str) -> None:
    """UserError "NEEDED_BY needs MODULE, which is not installed; FIX" unless MODULE is importable.

    Checked with importlib.util.find_spec, before anything imports it, so a missing runtime is
    one line to the user and not an ImportError traceback.
    """
    import importlib.util

    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a dotted name whose parent is missing, or a broken entry
        found = False
    if not found:
        raise UserError(f"{needed_by} needs {module}, which is not installed; {fix}")


def _torch_runner(model_dir: Path) -> Callable[[Any], Any]:
    """model.pt rebuilt with build_model; the TorchScript file when an export left model.pt out."""
    require_module(
        "torch",
        needed_by="--runtime torch",
        fix="use --runtime onnx (needs only onnxruntime), or install torch (https://pytorch.org)",
    )
    import torch

    if not (model_dir / "model.pt").is_file() and (model_dir / "model.ts").is_file():
        net = _load_torchscript(model_dir / "model.ts")
    else:
        from cnnsearch.export.model_files import load_exported

        net = load_exported(model_dir).net

    def run(batch: Any) -> Any:
        with torch.no_grad():
            return net(torch.from_numpy(batch)).numpy()

    return run


def _load_torchscript(path: Path) -> Any:
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export, still loads
            module = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, OSError, ValueError) as error:
        first = first_line(error)
        raise UserError(f"{path} is not a TorchScript model torch can load ({first}); export the model again") from None
    return module.eval()


def _onnx_runner(model_dir: Path) -> Callable[[Any], Any]:
    path = model_dir / "model.onnx"
    if not path.is_file():
        raise UserError(f"{model_dir} has no model.onnx; export the model with --format onnx, or use --runtime torch")
    require_module("onnxruntime", needed_by="--runtime onnx", fix="pip install onnxruntime, or use --runtime torch")
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types for a bad file
        first = first_line(error)
        raise UserError(f"{path} is not a model onnxruntime can load ({first}); export the model again") from None
    name = session.get_inputs()[0].name

    def run(batch: Any) -> Any:
        return session.run(None, {name: batch})[0]

    return run


# ---- output ----------------------------------------------------------------------------------------------
def predictions_table(predictions: Sequence[Prediction]) -> Any:
    """A rich Table of path, class and probability; says so when there is nothing to show."""
    from rich.table import Table
    from rich.text import Text

    if not predictions:
        table = Table(show_header=False, box=None)
        table.add_row(Text("No images classified."))
        return table
    table = Table(title=count(len(predictions), "image"))
    table.add_column("path")
    table.add_column("class")
    table.add_column("probability", justify="right")
    for prediction in predictions:
        table.add_row(Text(str(prediction.path)), Text(prediction.class_name), Text(f"{prediction.probability:.2%}"))
    return table


def predictions_text(predictions: Sequence[Prediction], fmt: str) -> str:
    """csv (header path,class,probability), json (a list of objects) or markdown."""
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "class", "probability"])
        for prediction in predictions:
            writer.writerow([str(prediction.path), prediction.class_name, f"{prediction.probability:.6f}"])
        return buffer.getvalue()
    if fmt == "json":
        rows = [
            {"path": str(p.path), "class": p.class_name, "class_index": p.class_index, "probability": p.probability}
            for p in predictions
        ]
        return json.dumps(rows, indent=2) + "\n"
    if fmt == "markdown":
        lines = ["| path | class | probability |", "| --- | --- | ---: |"]
        lines += [
            f"| {_markdown_cell(str(p.path))} | {_markdown_cell(p.class_name)} | {p.probability:.2%} |"
            for p in predictions
        ]
        return "\n".join(lines) + "\n"
    raise UserError(f"--format {fmt!r} is not available for predictions; use table, {', '.join(TEXT_FORMATS)}")


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|")
