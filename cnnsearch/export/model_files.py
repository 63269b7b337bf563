"""Owns writing and loading an export folder's model files: every format written to a temp name,
verified against the PyTorch network, then renamed into place with model.json last; and
model.pt loaded back into an eval-mode CPU network with its preprocessing (`load_exported`).

The folder's layout and its model.json reader live in `export.model_dir` (no torch there).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnsearch.data.device import normalize
from cnnsearch.errors import DiskFull, InfeasibleArchitecture, UserError, first_line
from cnnsearch.export.formats import (
    FILE_NAMES,
    FORMAT_TABLE,
    MODEL_FORMAT_VERSION,
    ONNX_INPUT,
    ONNX_OUTPUT,
    VERIFY_TOLERANCE,
    SavedModel,
    net_from_payload,
)
from cnnsearch.export.model_dir import (
    META_FILE,
    PREDICT_SCRIPT,
    predict_script_source,
    read_model_meta,
    require_model_folder,
)
from cnnsearch.model.build import CandidateNet
from cnnsearch.run.folder import honour_umask, package_versions, write_atomic
from cnnsearch.spec import Architecture

FULL_DISK_BYTES = 1 << 20  # a model writer's RuntimeError with less free than this is a full disk

# Files a previous export may have left; --force replaces these and nothing else.
_OWN_FILES = (*FILE_NAMES.values(), "model.onnx.data", PREDICT_SCRIPT, META_FILE)


def is_export_file(name: str) -> bool:
    """A name an export writes in its folder: a model file, or one's temp name (`.model.pt.x1y2.tmp`)."""
    return name in _OWN_FILES or any(name.startswith(f".{own}.") and name.endswith(".tmp") for own in _OWN_FILES)


INPUT_DESCRIPTION = "float32 NCHW normalised as (x/255 - mean)/std"


@dataclass
class ExportedModel:
    """An exported network loaded back: ready for inference on normalised input."""

    net: CandidateNet  # eval mode, on the CPU
    arch: Architecture
    class_names: tuple[str, ...]
    input_shape: tuple[int, int, int]  # C, H, W
    mean: list[float]  # per channel, in [0, 1] units
    std: list[float]
    meta: dict[str, Any]  # model.json ({} when the folder has none)

    def normalize(self, images_uint8: torch.Tensor) -> torch.Tensor:
        return normalize(images_uint8.cpu(), self.mean, self.std)


def _model_meta(
    arch: Architecture, dataset: Any, *, mean: list[float], std: list[float], test_accuracy: float
) -> dict[str, Any]:
    """What every model.json says about the network, its input and its one test evaluation."""
    return {
        "format": "cnnsearch-model",
        "format_version": MODEL_FORMAT_VERSION,
        "architecture": arch.to_dict(),
        "compact": arch.compact(),
        "class_names": list(dataset.class_names),
        "num_classes": dataset.num_classes,
        "input_shape": list(dataset.input_shape),
        "mean": mean,
        "std": std,
        "input": INPUT_DESCRIPTION,
        "output": "logits (N, num_classes); softmax gives class probabilities",
        "test_accuracy": test_accuracy,
        "test_size": len(dataset.test_labels),
        "test_source": dataset.test_source,
    }


def _cpu_eval(net: nn.Module) -> nn.Module:
    # Training on a GPU leaves conv weights channels-last; exported files want plain layouts.
    return net.cpu().to(memory_format=torch.contiguous_format).eval()


def _temp_name(folder: Path, name: str) -> Path:
    handle, temp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    honour_umask(handle)  # the writers keep this mode: a model folder is meant to be shared
    os.close(handle)
    return Path(temp)


def _write_model_folder(
    out: Path,
    *,
    net: nn.Module,
    arch: Architecture,
    input_shape: tuple[int, int, int],
    class_names: Sequence[str],
    mean: list[float],
    std: list[float],
    verify_images: torch.Tensor,
    formats: Sequence[str],
    meta: dict[str, Any],
    on_message: Callable[[str], None],
) -> tuple[list[Path], dict[str, float]]:
    """Write every format to a temp name, verify each against `net`, then rename all into place.

    A file that disagrees with the PyTorch model by more than VERIFY_TOLERANCE stops the export
    with RuntimeError and leaves `out` as it was. With the onnx format, predict.py (the
    package's standalone_predict.py, verbatim) goes beside model.onnx. model.json is written last.
    """
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.iterdir():  # temp files of an export that was killed here: never complete, never read
        if stale.name.startswith(".") and is_export_file(stale.name):
            stale.unlink(missing_ok=True)
    batch = normalize(verify_images.cpu(), mean, std)
    with torch.no_grad():
        reference = net(batch)
    temps: dict[str, Path] = {}
    saved = SavedModel(arch=arch, input_shape=tuple(input_shape), class_names=tuple(class_names), mean=mean, std=std)
    verification: dict[str, float] = {}
    script: Path | None = None  # predict.py's temp name, when the onnx format is written
    try:
        for name in formats:
            temp = temps[name] = _temp_name(out, FILE_NAMES[name])
            writer = FORMAT_TABLE[name]
            try:
                writer.write(temp, net, batch, saved)
            except RuntimeError:  # torch's and onnx's writers do not pass a full disk's errno on
                if shutil.disk_usage(out).free < FULL_DISK_BYTES:
                    raise DiskFull(out, f"the {name} model in {out}") from None
                raise
            outputs = writer.run(temp, batch)
            verification[name] = float((outputs - reference).abs().max()) if len(batch) else 0.0
            if not verification[name] <= VERIFY_TOLERANCE:  # also catches NaN
                raise RuntimeError(
                    f"the exported {name} model differs from the PyTorch model by up to {verification[name]:.3g} "
                    f"(tolerance {VERIFY_TOLERANCE:g}) on {len(batch)} test images; nothing was written to {out}"
                )
            on_message(f"{name}: max |diff| {verification[name]:.2g} on {len(batch)} test images")
        if "onnx" in formats:  # predict.py runs model.onnx with onnxruntime, without torch or cnnsearch
            script = _temp_name(out, PREDICT_SCRIPT)
            script.write_text(predict_script_source(), encoding="utf-8")
        # Every file checked: replace what an earlier export left, then move the new files in.
        for stale in _OWN_FILES:
            (out / stale).unlink(missing_ok=True)
        files = []
        for name, temp in temps.items():
            os.replace(temp, out / FILE_NAMES[name])
            files.append(out / FILE_NAMES[name])
        if script is not None:
            os.replace(script, out / PREDICT_SCRIPT)
            files.append(out / PREDICT_SCRIPT)
    finally:
        for leftover in (*temps.values(), script):
            if leftover is not None:
                leftover.unlink(missing_ok=True)
    meta.update(
        files=[path.name for path in files] + [META_FILE],
        verification=verification,
        verification_images=len(batch),
        onnx_io={"input": ONNX_INPUT, "output": ONNX_OUTPUT} if "onnx" in formats else None,
        versions=package_versions(("torch", "cnnsearch", "onnx", "onnxruntime"), python=False),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    write_atomic(out / META_FILE, json.dumps(meta, indent=2) + "\n")
    files.append(out / META_FILE)
    return files, verification


def load_exported(model_dir: Path) -> ExportedModel:
    """Load an export folder's model.pt into an eval-mode CPU network, with its preprocessing."""
    model_dir = Path(model_dir)
    require_model_folder(model_dir)
    path = model_dir / FILE_NAMES["pt"]
    if not path.is_file():
        raise UserError(
            f"{model_dir} has no model.pt; export the model with --format pt (or predict with --runtime onnx)"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        net = net_from_payload(payload)
        arch = Architecture.from_dict(payload["architecture"])
        input_shape = tuple(int(size) for size in payload["input_shape"])
    except (
        OSError,
        RuntimeError,
        KeyError,
        TypeError,
        ValueError,
        pickle.UnpicklingError,
        InfeasibleArchitecture,
    ) as error:  # any damage to the file means the same to the user
        first = first_line(error)
        raise UserError(
            f"{path} is not a model written by `cnnsearch export` ({first}); export the model again"
        ) from None
    return ExportedModel(
        net=net,
        arch=arch,
        class_names=tuple(payload["class_names"]),
        input_shape=input_shape,  # type: ignore[arg-type]
        mean=[float(value) for value in payload["mean"]],
        std=[float(value) for value in payload["std"]],
        meta=read_model_meta(model_dir),
    )
