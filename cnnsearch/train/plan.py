"""Owns the choices that differ between a GPU and a CPU training, made in one place
(`plan_for`): channels-last memory format, bf16 autocast, and the micro-batch a training
starts at (gradient accumulation up to the full batch).

The defaults are what each device does best: on CUDA channels-last and bf16 autocast (where
the GPU has bf16); on a CPU with bf16 matrix units (Intel AMX) both as well, which trained
the default starters 1.4-2.0x faster than float32 on a 2-core Xeon, with accuracy within noise
(bench/RESULTS.md); on other CPUs neither (bf16 is emulated there, slower than float32). Every
choice also runs on the CPU, so tests force them there (`TrialControl.plan`) and so can a whole
command, through CNNSEARCH_DEVICE_PLAN (README, Development): a GPU user's
first run is then not the first time that code executes.

Imports torch only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Literal

import torch

from cnnsearch.errors import UserError

PLAN_ENV = "CNNSEARCH_DEVICE_PLAN"  # e.g. "channels_last=on,autocast=bf16,micro_batch=16"
AUTOCASTS = ("bf16", "off")
_SWITCHES = {"on": True, "1": True, "true": True, "off": False, "0": False, "false": False}


@dataclass(frozen=True)
class DevicePlan:
    """How one training uses its device. Nothing here changes what is learnt, only how fast
    (and, for bf16, the rounding of the forward pass)."""

    channels_last: bool = False  # NHWC weights and batches: what tensor-core convolutions want
    autocast: Literal["bf16", "off"] = "off"  # forward passes in bf16; the loss stays float32
    micro_batch: int | None = None  # images per forward/backward at the first attempt; None: the whole batch

    def __post_init__(self) -> None:
        if self.autocast not in AUTOCASTS:
            raise ValueError(f"autocast must be one of {AUTOCASTS}, but got {self.autocast!r}")
        if self.micro_batch is not None and self.micro_batch < 1:
            raise ValueError(f"micro_batch >= 1 must hold, but got micro_batch={self.micro_batch}")

    def autocast_context(self, device: torch.device) -> torch.autocast:
        """The autocast region of a forward pass on `device` (a disabled one for float32)."""
        if self.autocast == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return torch.autocast(device.type, enabled=False)

    def label(self) -> str:
        """E.g. "channels-last, bf16 autocast"; "float32" for the plain plan (micro-batch aside)."""
        parts = (["channels-last"] if self.channels_last else []) + (
            ["bf16 autocast"] if self.autocast == "bf16" else []
        )
        return ", ".join(parts) or "float32"

    def first_micro_batch(self, batch_size: int) -> int:
        """The micro-batch of a training's first attempt; an out-of-memory error halves it."""
        return batch_size if self.micro_batch is None else min(self.micro_batch, batch_size)


FLOAT32 = DevicePlan()  # plain float32, contiguous, whole batches: what the exported files compute


FAST_BF16 = DevicePlan(channels_last=True, autocast="bf16")  # a GPU with bf16, or a CPU with AMX


def cpu_has_bf16_matrix_units() -> bool:
    """Whether this CPU multiplies bf16 in hardware (Intel AMX tiles), where oneDNN's bf16
    convolutions beat float32. torch's own probe is private: pinned by tests/train/test_plan.py."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(probe is not None and probe())


def default_plan(device: torch.device) -> DevicePlan:
    """What `device` does by default, before any override."""
    if device.type == "cuda":
        return FAST_BF16 if torch.cuda.is_bf16_supported() else DevicePlan(channels_last=True)
    return FAST_BF16 if cpu_has_bf16_matrix_units() else FLOAT32


def device_label(device: torch.device) -> str:
    """The device as a run and its trials record it: "cpu", or "cpu (channels-last, bf16 autocast)"
    when its plan is not plain float32 (the cost model calibrates only on trials of the same label)."""
    label = plan_for(device).label()
    return str(device) if label == FLOAT32.label() else f"{device} ({label})"


def plan_for(device: torch.device, given: DevicePlan | None = None) -> DevicePlan:
    """The one place a training's device choices are made: `given` when a caller forces one
    (tests), else the device's default with CNNSEARCH_DEVICE_PLAN's settings on top."""
    if given is not None:
        return given
    return parse_plan(os.environ.get(PLAN_ENV, ""), default_plan(device))


def parse_plan(text: str, base: DevicePlan) -> DevicePlan:
    """`base` with the settings of a CNNSEARCH_DEVICE_PLAN value ("key=value,..."); every bad
    entry is reported at once."""
    changes: dict[str, object] = {}
    problems: list[str] = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        key, _, value = (piece.strip() for piece in entry.partition("="))
        value = value.lower()
        if key == "channels_last" and value in _SWITCHES:
            changes[key] = _SWITCHES[value]
        elif key == "autocast" and value in AUTOCASTS:
            changes[key] = value
        elif key == "micro_batch" and value.isdigit() and int(value) >= 1:
            changes[key] = int(value)
        elif key in ("channels_last", "autocast", "micro_batch"):
            allowed = {"channels_last": "on or off", "autocast": "bf16 or off", "micro_batch": "a whole number >= 1"}
            problems.append(f"{key}={value!r} should be {allowed[key]}")
        else:
            problems.append(f"unknown setting {entry!r} (known: channels_last, autocast, micro_batch)")
    if problems:
        raise UserError(f"{PLAN_ENV}: {'; '.join(problems)}; fix or unset it")
    return replace(base, **changes)  # type: ignore[arg-type]
