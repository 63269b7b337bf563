"""Owns an export folder's layout and the one reader of its model.json
(`read_model_meta`; `predict` uses it too). Pure Python: `cnnsearch predict --runtime onnx`
reads model folders without torch. Writing and loading the model files: `export.model_files`.

An export folder describes itself:

    model.pt     {"architecture", "state_dict", "input_shape", "class_names", "mean", "std"};
                 loads with torch.load(weights_only=True) and rebuilds with build_model
    model.ts     TorchScript of the eval-mode CPU network
    model.onnx   ONNX with a dynamic batch axis (input "input", output "logits")
    model.json   architecture, preprocessing, test accuracy, verification, provenance
    predict.py   (with model.onnx) classifies images with model.json's preprocessing and
                 model.onnx, needing only numpy, pillow and onnxruntime: a verbatim copy of
                 cnnsearch/export/standalone_predict.py

Every model file takes NORMALISED float32 (N, C, H, W) input, (x / 255 - mean) / std with the
mean and std of the images the network was trained on, and returns logits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cnnsearch.errors import UserError

META_FILE = "model.json"
PREDICT_SCRIPT = "predict.py"  # written beside model.onnx
PREDICT_TEMPLATE = "standalone_predict.py"  # its source, package data of cnnsearch.export


def predict_script_source() -> str:
    """The text of the folder's predict.py: the package's standalone_predict.py, unchanged."""
    from importlib.resources import files

    return (files("cnnsearch.export") / PREDICT_TEMPLATE).read_text(encoding="utf-8")


def require_model_folder(model_dir: Path) -> None:
    """UserError unless `model_dir` is a folder (what is in it is for its reader to judge)."""
    if not Path(model_dir).is_dir():
        raise UserError(f"model folder {model_dir} does not exist; pass a folder written by `cnnsearch export`")


def read_model_meta(model_dir: Path, *, required: bool = False) -> dict[str, Any]:
    """model.json of an export folder: the one reader of it (export, fine-tune and predict).

    `{}` when the folder has none, unless `required`: then a missing folder or file is a
    UserError that says what to pass. Damaged JSON is always a UserError.
    """
    model_dir = Path(model_dir)
    path = model_dir / META_FILE
    if required:
        require_model_folder(model_dir)
    if not path.is_file():
        if required:
            raise UserError(f"{model_dir} has no {META_FILE}; pass a folder written by `cnnsearch export`")
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"{path} is not valid JSON ({error}); export the model again") from None
    if not isinstance(meta, dict):
        if required:
            raise UserError(f"{path} is not a model description written by `cnnsearch export`; export the model again")
        return {}
    return meta
