"""The GPU's choices run on the CPU too: channels-last, bf16 autocast and micro-batches with
gradient accumulation, each forced through a `DevicePlan` and held against plain float32 whole
batches on real digits (no GPU has to be present for this code to have run once).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from cnnsearch.data.device import to_device
from cnnsearch.data.load import load_dataset
from cnnsearch.data.split import make_split
from cnnsearch.spec import Architecture, AugmentSettings, ConvLayer, Head, PoolLayer, TrainSettings
from cnnsearch.train.loop import train_candidate
from cnnsearch.train.plan import FLOAT32, DevicePlan
from cnnsearch.train.result import TrialControl

# No batch norm, no dropout, no augmentation: nothing but the summation order depends on how a
# batch is cut into micro-batches, so accumulated gradients must give the full batch's weights.
# Smooth everywhere (silu, average pooling): a ReLU or max-pool tie that a rounding difference of
# 1e-7 tips the other way would change a gradient by a step, and the runs would part for real.
PLAIN = Architecture(
    layers=(
        ConvLayer(8, 3, activation="silu", batch_norm=False),
        PoolLayer("avg", 2, 2),
        ConvLayer(16, 3, activation="silu", batch_norm=False),
    ),
    head=Head("flatten", (), 0.0),
    train=TrainSettings(optimizer="sgd", lr=0.05, batch_size=64, epochs=1, schedule="onecycle"),
    augment=AugmentSettings(),
)

# The search's usual kind of candidate: batch norm, dropout, augmentation.
NORMED = Architecture(
    layers=(ConvLayer(8, 3), PoolLayer("max", 2, 2), ConvLayer(16, 3), PoolLayer("max", 2, 2)),
    head=Head("flatten", (), 0.1),
    train=TrainSettings(optimizer="adamw", lr=0.01, batch_size=64, epochs=1),
    augment=AugmentSettings(translate=1),
)


@pytest.fixture(scope="module")
def digits():
    dataset = load_dataset("digits")
    return to_device(dataset, make_split(dataset.train_labels, seed=0), "cpu")


def _train(arch: Architecture, data, plan: DevicePlan, *, measure_latency: bool = False):
    result = train_candidate(arch, data, control=TrialControl(seed=3, measure_latency=measure_latency, plan=plan))
    assert result.outcome == "complete", result.reason
    return result


def _weights(result) -> dict[str, torch.Tensor]:
    return {key: value.detach().contiguous() for key, value in result.model.state_dict().items()}


@pytest.mark.parametrize(("batch_size", "micro_batch"), [(64, 16), (60, 16)])
def test_micro_batches_accumulate_to_the_weights_of_the_full_batch(digits, batch_size: int, micro_batch: int) -> None:
    arch = replace(PLAIN, train=replace(PLAIN.train, batch_size=batch_size))
    full = _train(arch, digits, FLOAT32)
    micro = _train(arch, digits, DevicePlan(micro_batch=micro_batch))
    assert full.micro_batch == batch_size and micro.micro_batch == micro_batch
    # Every step of the epoch (len(train) // batch_size of them) went through the same weights.
    full_weights, micro_weights = _weights(full), _weights(micro)
    assert full_weights.keys() == micro_weights.keys()
    for key, value in full_weights.items():
        torch.testing.assert_close(micro_weights[key], value, rtol=1e-4, atol=1e-5, msg=key)
    assert micro.train_loss == pytest.approx(full.train_loss, rel=1e-4)
    assert micro.val_acc == pytest.approx(full.val_acc, abs=1 / len(digits.val_y))


def test_batch_norm_makes_micro_batches_differ_by_design(digits) -> None:
    # Batch norm normalises each micro-batch with its own statistics (and updates its running
    # ones once per micro-batch), so accumulation cannot reproduce the full batch exactly; the
    # network still trains as well. This is why an OOM retry is recorded as `micro_batch`.
    full = _train(NORMED, digits, FLOAT32)
    micro = _train(NORMED, digits, DevicePlan(micro_batch=16))
    running = "features.1.running_mean"
    assert running in full.model.state_dict()
    assert not torch.allclose(micro.model.state_dict()[running], full.model.state_dict()[running], atol=1e-4)
    assert micro.best_val_acc == pytest.approx(full.best_val_acc, abs=0.1)


def test_accumulation_counts_optimiser_steps_in_the_schedule_and_checkpoints(digits, tmp_path: Path) -> None:
    arch = replace(NORMED, train=replace(NORMED.train, epochs=2))
    states = {}
    for name, plan in (("full", FLOAT32), ("micro", DevicePlan(micro_batch=16))):
        path = tmp_path / f"{name}.pt"
        control = {"checkpoint_path": path, "epoch_callback": lambda epoch, accuracy: epoch == 1}
        result = train_candidate(
            arch, digits, control=TrialControl(seed=3, measure_latency=False, plan=plan, **control)
        )
        assert result.outcome == "pruned" and result.epochs_run == 1
        states[name] = torch.load(path, weights_only=True)
    steps = len(digits.train_y) // arch.train.batch_size  # optimiser steps in one epoch
    for state in states.values():
        assert state["epoch"] == 1
        assert state["scheduler"]["last_epoch"] == steps  # one schedule step per optimiser step
        adam = state["optimizer"]["state"]
        assert {int(entry["step"]) for entry in adam.values()} == {steps}
    assert states["micro"]["scheduler"]["_last_lr"] == states["full"]["scheduler"]["_last_lr"]


def test_the_nan_check_runs_on_optimiser_steps_not_micro_batches() -> None:
    from cnnsearch.train.module import NAN_CHECK_EVERY, nan_check_due

    steps = 3 * NAN_CHECK_EVERY
    whole = [index for index in range(steps) if nan_check_due(index, 1)]
    assert whole == [0, NAN_CHECK_EVERY, 2 * NAN_CHECK_EVERY]
    # Four micro-batches a step: the same steps are checked, on their first micro-batch.
    assert [index for index in range(4 * steps) if nan_check_due(index, 4)] == [4 * step for step in whole]


def test_a_diverging_training_with_micro_batches_is_a_nan(digits) -> None:
    exploding = replace(NORMED, train=replace(NORMED.train, optimizer="sgd", lr=1e5))
    result = train_candidate(
        exploding, digits, control=TrialControl(measure_latency=False, plan=DevicePlan(micro_batch=16))
    )
    assert result.outcome == "nan" and "lower the learning rate" in result.reason


def test_channels_last_trains_like_the_default_layout(digits) -> None:
    plain = _train(NORMED, digits, FLOAT32)
    nhwc = _train(NORMED, digits, DevicePlan(channels_last=True), measure_latency=True)
    # The path ran: the 8 -> 16 conv's weights are NHWC (a 1-channel conv looks the same both ways).
    assert nhwc.model.features[4].weight.is_contiguous(memory_format=torch.channels_last)
    assert not plain.model.features[4].weight.is_contiguous(memory_format=torch.channels_last)
    assert nhwc.train_loss == pytest.approx(plain.train_loss, rel=1e-3)
    assert nhwc.val_acc == pytest.approx(plain.val_acc, abs=0.02)
    assert nhwc.latency_ms is not None and nhwc.latency_ms > 0


def test_bf16_autocast_trains_evaluates_and_keeps_the_loss_in_float32(digits) -> None:
    from cnnsearch.train.evaluate import evaluate, measure_latency
    from cnnsearch.train.module import step_loss

    bf16 = DevicePlan(autocast="bf16")
    result = _train(NORMED, digits, bf16, measure_latency=True)
    assert all(torch.isfinite(torch.tensor(result.train_loss)))
    assert result.best_val_acc > 0.3  # chance is 0.1; float32 reaches 0.6 in this one epoch
    assert result.latency_ms is not None and result.latency_ms > 0

    net = result.model.train()
    images, labels = digits.normalize(digits.train_x[:32]), digits.train_y[:32]
    logits, loss = step_loss(net, images, labels, plan=bf16, label_smoothing=0.1)
    assert logits.dtype == torch.bfloat16  # the forward pass ran under autocast
    assert loss.dtype == torch.float32
    # The loss of the float32 copy of the logits, computed outside autocast: not a bf16 loss upcast.
    expected = torch.nn.functional.cross_entropy(logits.float(), labels, label_smoothing=0.1)
    assert torch.equal(loss, expected)
    loss.backward()
    assert all(parameter.grad.dtype == torch.float32 for parameter in net.parameters())  # master weights stay float32

    val = {"images": digits.val_x, "labels": digits.val_y}
    assert evaluate(net, digits, plan=bf16, **val) == pytest.approx(
        evaluate(net, digits, plan=FLOAT32, **val), abs=0.03
    )
    assert measure_latency(net, digits.input_shape, batch_size=8, device=torch.device("cpu"), plan=bf16) > 0
