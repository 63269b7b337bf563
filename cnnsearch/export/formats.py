"""Owns the model file formats as a table: each `--format` name maps to its file, the function
that writes it and the one that runs it back for verification (`FORMAT_TABLE`).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnsearch.export.options import FORMATS
from cnnsearch.model.build import CandidateNet, build_model
from cnnsearch.spec import Architecture

MODEL_FORMAT_VERSION = 1  # of model.pt and model.json; bump when a key changes meaning
ONNX_INPUT, ONNX_OUTPUT = "input", "logits"
VERIFY_IMAGES = 64  # real test images run through every exported file
VERIFY_TOLERANCE = 1e-3  # largest |logit difference| accepted between PyTorch and an exported file


@dataclass(frozen=True)
class SavedModel:
    """What a model file needs besides the network: how to rebuild it and feed it."""

    arch: Architecture
    input_shape: tuple[int, ...]  # C, H, W
    class_names: tuple[str, ...]
    mean: list[float]  # per channel, [0, 1] units
    std: list[float]


def _save_pt(path: Path, net: nn.Module, batch: torch.Tensor, saved: SavedModel) -> None:
    payload = {
        "format_version": MODEL_FORMAT_VERSION,
        "architecture": saved.arch.to_dict(),
        "state_dict": net.state_dict(),
        "input_shape": [int(size) for size in saved.input_shape],
        "class_names": [str(name) for name in saved.class_names],
        "mean": [float(value) for value in saved.mean],
        "std": [float(value) for value in saved.std],
    }
    torch.save(payload, path)


def _run_pt(path: Path, batch: torch.Tensor) -> torch.Tensor:
    net = net_from_payload(torch.load(path, map_location="cpu", weights_only=True))
    with torch.no_grad():
        return net(batch)


def net_from_payload(payload: dict[str, Any]) -> CandidateNet:
    arch = Architecture.from_dict(payload["architecture"])
    net = build_model(arch, tuple(payload["input_shape"]), len(payload["class_names"]))
    net.load_state_dict(payload["state_dict"])
    return net.eval()


def _save_torchscript(path: Path, net: nn.Module, batch: torch.Tensor, saved: SavedModel) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export, still works
        try:
            module = torch.jit.script(net)
        except Exception:  # a layer script can't compile: tracing records what the eval model does
            module = torch.jit.trace(net, batch[:2], check_trace=False)
        torch.jit.save(module, str(path))


def _run_torchscript(path: Path, batch: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location="cpu")
    module.eval()
    with torch.no_grad():
        return module(batch)


def _save_onnx(path: Path, net: nn.Module, batch: torch.Tensor, saved: SavedModel) -> None:
    """ONNX with a dynamic batch axis: the legacy exporter (needs no onnxscript), else torch.export's."""
    example = batch[:2] if len(batch) >= 2 else torch.zeros(2, *batch.shape[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                net,
                (example,),
                str(path),
                dynamo=False,
                input_names=[ONNX_INPUT],
                output_names=[ONNX_OUTPUT],
                dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}},
            )
            return
        except Exception as legacy_error:  # removed or failing legacy exporter: try the dynamo one
            onnx_logger = logging.getLogger("torch.onnx")
            level = onnx_logger.level
            onnx_logger.setLevel(logging.ERROR)
            try:
                program = torch.onnx.export(
                    net,
                    (example,),
                    dynamo=True,
                    input_names=[ONNX_INPUT],
                    output_names=[ONNX_OUTPUT],
                    dynamic_shapes=({0: torch.export.Dim("batch")},),
                    verbose=False,
                )
                program.save(str(path))
            except Exception as dynamo_error:
                raise RuntimeError(
                    f"ONNX export failed with both exporters: legacy: {legacy_error}; dynamo: {dynamo_error}"
                ) from dynamo_error
            finally:
                onnx_logger.setLevel(level)


def _run_onnx(path: Path, batch: torch.Tensor) -> torch.Tensor:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return torch.from_numpy(session.run(None, {name: batch.numpy()})[0])


@dataclass(frozen=True)
class ExportFormat:
    """One model file: its name, how it is written, and how it is run back for verification."""

    file: str
    write: Callable[[Path, nn.Module, torch.Tensor, SavedModel], None]
    run: Callable[[Path, torch.Tensor], torch.Tensor]  # logits of a normalised batch


# --format name -> its file. Every file is run back on real test images before it is kept.
FORMAT_TABLE: dict[str, ExportFormat] = {
    "onnx": ExportFormat("model.onnx", _save_onnx, _run_onnx),
    "torchscript": ExportFormat("model.ts", _save_torchscript, _run_torchscript),
    "pt": ExportFormat("model.pt", _save_pt, _run_pt),
}
assert tuple(FORMAT_TABLE) == FORMATS, "export.options.FORMATS names every file"
FILE_NAMES = {name: export_format.file for name, export_format in FORMAT_TABLE.items()}
