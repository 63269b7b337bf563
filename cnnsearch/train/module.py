"""Owns the training step: shuffled, augmented batches sliced from resident uint8 tensors,
the learning-rate schedule, and the LightningModule with its per-epoch bookkeeping
(validation, checkpoints, pruning callbacks, NaN and budget checks).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from cnnsearch.data.augment import augment_batch
from cnnsearch.data.device import DeviceData
from cnnsearch.spec import Architecture, TrainSettings
from cnnsearch.train.checkpoint import checkpoint_state, write_checkpoint
from cnnsearch.train.evaluate import eval_batch_size, evaluate_each, pack_outcomes
from cnnsearch.train.lightning_private import import_lightning
from cnnsearch.train.plan import DevicePlan
from cnnsearch.train.result import StopTrial, TrialControl, TrialResult

NAN_CHECK_EVERY = 16  # optimiser steps between finite-loss checks (each one syncs with the device)


class ResidentBatches:
    """Shuffled, augmented batches sliced from uint8 tensors that live on the device.

    With a micro-batch below the batch, each optimiser step's batch is cut into
    `micro_per_step` near-equal micro-batches (none above `micro_batch`), which Lightning
    accumulates; `micro_weight` makes unequal ones count per image, as in the full batch.
    """

    def __init__(
        self,
        data: DeviceData,
        *,
        batch_size: int,
        micro_batch: int,
        augment_settings: object,
        generator: torch.Generator,
        channels_last: bool,
    ) -> None:
        self.data = data
        self.micro_batch = micro_batch
        self.augment = augment_settings
        self.generator = generator
        self.channels_last = channels_last
        count = len(data.train_y)
        # Whole optimiser steps only: a last batch of 1 image breaks batch norm.
        self.steps = max(1, count // batch_size)
        self.images_per_epoch = min(count, self.steps * batch_size)
        self.step_images = max(1, self.images_per_epoch // self.steps)  # the batch, or all images when fewer
        self.micro_per_step = max(1, -(-self.step_images // micro_batch))

    def __len__(self) -> int:
        return self.steps * self.micro_per_step

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        data = self.data
        order = torch.randperm(len(data.train_y), generator=self.generator, device=data.train_y.device)
        order = order[: self.images_per_epoch]
        for start in range(0, self.images_per_epoch, self.step_images):
            for index in order[start : start + self.step_images].tensor_split(self.micro_per_step):
                yield self._batch(index)

    def _batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        data = self.data
        images = data.normalize(data.train_x[index])
        images = augment_batch(
            images,
            translate=self.augment.translate,
            flip=self.augment.flip,
            cutout=self.augment.cutout,
            generator=self.generator,
        )
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, data.train_y[index]

    def micro_weight(self, images: int) -> float:
        """The factor on a micro-batch's mean loss that makes the accumulated gradient the full
        batch's mean: Lightning divides each by `micro_per_step`, so equal micro-batches get 1."""
        return images * self.micro_per_step / self.step_images


def lr_factor(step: int, total: int, settings: TrainSettings) -> float:
    """Learning-rate multiplier at an optimiser step: warm-up then cosine/linear decay."""
    if settings.schedule == "constant":
        return 1.0
    warmup = max(1, int(settings.warmup * total))
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if settings.schedule == "onecycle":
        return max(0.0, 1.0 - progress)  # linear decay to zero: a one-cycle triangle
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def step_loss(
    net: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, plan: DevicePlan, label_smoothing: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, loss) of one micro-batch: the forward pass under the plan's autocast, the loss
    in float32 outside it (bf16 logits would round the softmax and its gradient)."""
    with plan.autocast_context(images.device):
        logits = net(images)
    return logits, F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)


def nan_check_due(batch_index: int, micro_per_step: int) -> bool:
    """Whether a micro-batch's loss is checked for NaN: the first micro-batch of every
    NAN_CHECK_EVERY-th optimiser step of an epoch, however many micro-batches a step has."""
    step, micro = divmod(batch_index, micro_per_step)
    return micro == 0 and step % NAN_CHECK_EVERY == 0


def _make_module_class():
    pl = import_lightning()

    class CandidateModule(pl.LightningModule):
        """Wraps a built network with its optimiser, schedule and per-epoch bookkeeping."""

        def __init__(
            self,
            net: nn.Module,
            arch: Architecture,
            data: DeviceData,
            control: TrialControl,
            *,
            total_steps: int,
            start_epoch: int,
            resume_state: dict | None,
            plan: DevicePlan,
            batches: ResidentBatches,
            result: TrialResult,
            started: float,
        ) -> None:
            super().__init__()
            self.net = net
            self.arch = arch
            self.data = data
            self.control = control
            self.total_steps = total_steps
            self.planned_epochs = arch.train.epochs  # control.replan may change it (and total_steps)
            self.start_epoch = start_epoch
            self.resume_state = resume_state
            self.plan = plan
            self.batches = batches
            self.result = result
            self.started = started
            self.last_checkpoint = started  # time.monotonic() of the last resume checkpoint on disk
            self.unsaved_checkpoint: dict | None = None  # a later finished epoch, in memory only
            self.loss_sum = torch.zeros((), device=data.train_y.device)
            self.loss_steps = 0
            self.generator: torch.Generator | None = None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def configure_optimizers(self):
            settings = self.arch.train
            decay, no_decay = [], []
            for parameter in self.net.parameters():
                if parameter.requires_grad:
                    (decay if parameter.ndim > 1 else no_decay).append(parameter)
            groups = [
                {"params": decay, "weight_decay": settings.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ]  # no decay on biases and norms
            if settings.optimizer == "sgd":
                nesterov = settings.momentum > 0  # torch refuses Nesterov without momentum
                optimizer = torch.optim.SGD(groups, lr=settings.lr, momentum=settings.momentum, nesterov=nesterov)
            else:
                optimizer = torch.optim.AdamW(groups, lr=settings.lr)
            # Reads total_steps at every step: a re-plan (control.replan) stretches or shrinks the schedule.
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: lr_factor(step, self.total_steps, settings)
            )
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

        def on_train_start(self) -> None:
            if self.resume_state is not None:
                self.trainer.optimizers[0].load_state_dict(self.resume_state["optimizer"])
                self.trainer.lr_scheduler_configs[0].scheduler.load_state_dict(self.resume_state["scheduler"])
            if self.control.on_train_start is not None:
                self.control.on_train_start()

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_index: int) -> torch.Tensor:
            images, labels = batch
            _, loss = step_loss(
                self.net, images, labels, plan=self.plan, label_smoothing=self.arch.train.label_smoothing
            )
            batches = self.batches
            if batches.micro_per_step > 1 and len(labels) * batches.micro_per_step != batches.step_images:
                loss = loss * batches.micro_weight(len(labels))  # unequal micro-batches count per image
            detached = loss.detach()
            self.loss_sum += detached
            self.loss_steps += 1
            control = self.control
            if nan_check_due(batch_index, batches.micro_per_step) and not torch.isfinite(detached):
                raise StopTrial(
                    "nan",
                    f"the training loss became {detached.item()} at epoch "
                    f"{self.start_epoch + self.current_epoch + 1}; lower the learning rate",
                )
            now = time.monotonic()
            if control.should_stop is not None and control.should_stop():
                raise StopTrial("interrupted", "interrupted by the user")
            if control.deadline is not None and now >= control.deadline:
                raise StopTrial("interrupted", "the search's time budget ran out")
            if control.time_limit_s is not None and now - self.started >= control.time_limit_s:
                raise StopTrial("timeout", f"stopped after the trial timeout of {control.time_limit_s:g} s")
            return loss

        def on_train_epoch_end(self) -> None:
            epoch = self.start_epoch + self.current_epoch + 1
            mean_loss = (self.loss_sum / max(1, self.loss_steps)).item()
            self.loss_sum.zero_()
            self.loss_steps = 0
            if not math.isfinite(mean_loss):
                raise StopTrial(
                    "nan", f"the training loss became {mean_loss} at epoch {epoch}; lower the learning rate"
                )
            result = self.result
            result.train_loss.append(mean_loss)
            result.epochs_run = epoch
            control = self.control
            if control.replan is not None:
                planned = control.replan(epoch, time.monotonic() - self.started)
                if planned != self.planned_epochs:
                    self.total_steps = self.total_steps // self.planned_epochs * planned
                    self.planned_epochs = planned
                if epoch >= self.planned_epochs:
                    self.trainer.should_stop = True  # the Trainer's max_epochs is the re-plan's cap
            if control.on_epoch_end is not None:
                control.on_epoch_end(epoch, mean_loss)
            if control.validate:
                right = evaluate_each(
                    self.net,
                    self.data,
                    images=self.data.val_x,
                    labels=self.data.val_y,
                    batch_size=eval_batch_size(
                        result.micro_batch or self.arch.train.batch_size, self.arch.train.batch_size
                    ),
                    plan=self.plan,
                )
                accuracy = right.sum().item() / len(right) if len(right) else float("nan")
                if not result.val_acc or accuracy > max(result.val_acc):
                    # The leaderboard ranks by the best epoch, so the kept weights are that epoch's,
                    # and so are the per-image outcomes that ties are judged by (paired).
                    result.best_state = {
                        key: value.detach().to("cpu", copy=True) for key, value in self.net.state_dict().items()
                    }
                    result.val_correct = pack_outcomes(right)
                result.val_acc.append(accuracy)
            # After the last epoch nothing is left to resume. Before it, a checkpoint goes to
            # disk at most every checkpoint_every_s (short epochs would spend more on writing
            # than a kill loses); the others stay in memory, written only if the trial is
            # interrupted cleanly (Ctrl-C, the deadline), so a clean stop loses no epoch.
            if control.checkpoint_path is not None and epoch < self.planned_epochs:
                now = time.monotonic()
                state = checkpoint_state(self, result)
                if now - self.last_checkpoint >= control.checkpoint_every_s:
                    write_checkpoint(control.checkpoint_path, state)
                    self.last_checkpoint, self.unsaved_checkpoint = now, None
                else:
                    self.unsaved_checkpoint = state
            if control.validate and control.epoch_callback is not None:
                verdict = control.epoch_callback(epoch, result.val_acc[-1])
                if verdict:
                    reason = verdict if isinstance(verdict, str) else "the pruner stopped it"
                    raise StopTrial(
                        "pruned",
                        f"pruned after epoch {epoch} at {result.val_acc[-1]:.2%} validation accuracy: {reason}",
                    )

    return CandidateModule


_MODULE_CLASS = None


def candidate_module_class():
    global _MODULE_CLASS
    if _MODULE_CLASS is None:
        _MODULE_CLASS = _make_module_class()
    return _MODULE_CLASS
