"""Owns scoring a network: accuracy on a whole resident split (one host sync) and the inference
latency of one batch, each with a training's `DevicePlan` (bf16 autocast, channels-last).
"""

from __future__ import annotations

import time

import torch
from torch import nn

from cnnsearch.data.device import DeviceData
from cnnsearch.train.plan import DevicePlan, plan_for

EVAL_BATCH = 1024  # images per evaluation batch at a trial's full training batch


def eval_batch_size(micro_batch: int, batch_size: int) -> int:
    """The evaluation batch, shrunk in step with a micro-batch that an out-of-memory retry halved."""
    return max(1, EVAL_BATCH * micro_batch // max(1, batch_size))


def evaluate(
    net: nn.Module,
    data: DeviceData,
    *,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = EVAL_BATCH,
    plan: DevicePlan | None = None,
) -> float:
    """Accuracy on a whole resident split (one host sync at the end); `plan`: the device's by default."""
    if len(labels) == 0:
        return float("nan")
    right = evaluate_each(net, data, images=images, labels=labels, batch_size=batch_size, plan=plan)
    return right.sum().item() / len(labels)


def evaluate_each(
    net: nn.Module,
    data: DeviceData,
    *,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = EVAL_BATCH,
    plan: DevicePlan | None = None,
) -> torch.Tensor:
    """Whether each image of a resident split is classified right (a bool tensor on its device;
    no host sync): the paired comparison of two candidates needs it image by image."""
    plan = plan or plan_for(labels.device)
    was_training = net.training
    net.eval()
    right = torch.zeros(len(labels), dtype=torch.bool, device=labels.device)
    with torch.no_grad(), plan.autocast_context(labels.device):
        for start in range(0, len(labels), batch_size):
            batch = data.normalize(images[start : start + batch_size])
            if plan.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            right[start : start + batch_size] = net(batch).argmax(dim=1) == labels[start : start + batch_size]
    net.train(was_training)
    return right


def pack_outcomes(right: torch.Tensor) -> str:
    """Per-image outcomes as text for a trial record: base64 of the bits packed 8 to a byte, the
    first image in the highest bit of the first byte (`results.noise.unpack_outcomes` reads it)."""
    import base64

    import numpy as np

    return base64.b64encode(np.packbits(right.to("cpu").numpy()).tobytes()).decode("ascii")


def autocast_for(device: torch.device) -> torch.autocast:
    """The autocast of `device`'s default plan (bench/throughput.py times the trainer with it)."""
    return plan_for(device).autocast_context(device)


def measure_latency(
    net: nn.Module,
    input_shape: tuple[int, int, int],
    *,
    batch_size: int,
    device: torch.device,
    plan: DevicePlan | None = None,
    repeats: int = 3,
) -> float:
    """Fastest of a few timed inference batches on the device, in ms (after a warm-up).

    The minimum, not the median: on a shared machine the other runs only ever add time.
    """
    plan = plan or plan_for(device)
    was_training = net.training
    net.eval()
    batch = torch.zeros(batch_size, *input_shape, device=device)
    if plan.channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    timings = []
    with torch.no_grad(), plan.autocast_context(device):
        for attempt in range(repeats + 1):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            net(batch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if attempt:  # the first run warms caches up
                timings.append((time.perf_counter() - start) * 1000)
    net.train(was_training)
    return min(timings)
