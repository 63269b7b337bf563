"""Owns training one candidate and scoring it: the LightningModule and `train_candidate`.

The trainer is built for thousands of short trainings: data stays resident on the device
as uint8, batches are sliced from a shuffled index and augmented there, metrics stay on
the device until the epoch ends (no per-step host sync), and Lightning's banners,
progress bars, loggers and checkpoints are off. A candidate that fails is a recorded
result (`TrialResult.outcome`), never an exception that stops a search.

Knows model, data, augment and spec. Must not know Optuna: pruning reaches it as an
`epoch_callback` that returns True to stop.
"""
from __future__ import annotations

import copy
import gc
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from cnnsearch.augment import augment_batch, make_generator
from cnnsearch.data import DeviceData
from cnnsearch.errors import InfeasibleArchitecture
from cnnsearch.model import build_model
from cnnsearch.spec import Architecture, TrainSettings, forward_flops

# Outcomes a candidate can end with. PRUNED_OUTCOMES end as Optuna PRUNED so that samplers
# learn to avoid them (TPE ignores FAILED trials); "error" is a real bug and ends FAIL.
PRUNED_OUTCOMES = ("pruned", "infeasible", "over_budget", "oom", "nan", "timeout")
FAILED_OUTCOMES = ("error", "interrupted")
NAN_CHECK_EVERY = 16  # steps between finite-loss checks (each one syncs with the device)


@dataclass
class TrialResult:
    """What one training of one candidate produced; everything the leaderboard shows."""

    outcome: str  # "complete", one of PRUNED_OUTCOMES, or one of FAILED_OUTCOMES
    reason: str = ""
    val_acc: list[float] = field(default_factory=list)  # per finished epoch
    train_loss: list[float] = field(default_factory=list)  # mean per finished epoch
    epochs_run: int = 0
    train_seconds: float = 0.0
    images_per_sec: float = 0.0
    params: int = 0
    flops: int = 0
    latency_ms: float | None = None  # inference of one batch on the training device; None: not measured
    micro_batch: int = 0  # < batch_size when OOM forced gradient accumulation
    model: nn.Module | None = field(default=None, repr=False)  # trained net, on CPU
    best_state: dict | None = field(default=None, repr=False)  # state_dict of the best epoch, on CPU

    @property
    def best_val_acc(self) -> float | None:
        return max(self.val_acc) if self.val_acc else None

    @property
    def final_val_acc(self) -> float | None:
        return self.val_acc[-1] if self.val_acc else None

    @property
    def best_epoch(self) -> int | None:
        return self.val_acc.index(max(self.val_acc)) + 1 if self.val_acc else None

    def metrics(self) -> dict[str, object]:
        """The JSON-ready metrics stored on the trial and in trials/<n>.json."""
        return {
            "outcome": self.outcome,
            "reason": self.reason,
            "val_acc": self.val_acc,
            "train_loss": self.train_loss,
            "best_val_acc": self.best_val_acc,
            "final_val_acc": self.final_val_acc,
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "train_seconds": round(self.train_seconds, 3),
            "images_per_sec": round(self.images_per_sec, 1),
            "params": self.params,
            "flops": self.flops,
            "latency_ms": round(self.latency_ms, 4) if self.latency_ms is not None else None,
            "micro_batch": self.micro_batch,
        }


class StopTrial(Exception):
    """Raised inside the training loop to end a trial early with an outcome."""

    def __init__(self, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


@dataclass
class TrialControl:
    """How the caller steers one training: budgets, pruning, interruption, checkpoints."""

    seed: int = 0
    time_limit_s: float | None = None  # this trial's budget, seconds
    deadline: float | None = None  # time.monotonic() at which the whole search must stop
    should_stop: Callable[[], bool] | None = None  # e.g. Ctrl-C was pressed
    epoch_callback: Callable[[int, float], bool | str] | None = None  # (epoch, val_acc) -> prune? (or why)
    on_measured: Callable[[dict[str, float]], None] | None = None  # params, flops, latency_ms before epoch 1
    checkpoint_path: Path | None = None  # last finished epoch, to resume an interrupted trial
    checkpoint_every_s: float = 0.0  # seconds of training between two resume checkpoints; 0: every epoch
    measure_latency: bool = True  # False when no objective needs it: it costs ~3% of a short trial
    validate: bool = True  # False for a final retrain: no validation split is used


def resolve_device(name: str | None = "auto") -> torch.device:
    """`auto` picks CUDA when present, else CPU; anything else must exist here."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    from cnnsearch.errors import UserError

    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: no CUDA GPU is visible here; use --device cpu or auto")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) are visible; use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    return device


# ---- batches from resident tensors -----------------------------------------------------------
class ResidentBatches:
    """Shuffled, augmented batches sliced from uint8 tensors that live on the device."""

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
        self.micro_per_step = max(1, -(-batch_size // micro_batch))

    def __len__(self) -> int:
        return self.steps * self.micro_per_step

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        data = self.data
        order = torch.randperm(len(data.train_y), generator=self.generator, device=data.train_y.device)
        order = order[: self.images_per_epoch]
        for start in range(0, self.images_per_epoch, self.micro_batch):
            index = order[start : start + self.micro_batch]
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
            yield images, data.train_y[index]


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


def evaluate(net: nn.Module, data: DeviceData, *, images: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 1024, channels_last: bool = False) -> float:
    """Accuracy on a whole resident split (one host sync at the end)."""
    if len(labels) == 0:
        return float("nan")
    was_training = net.training
    net.eval()
    correct = torch.zeros((), dtype=torch.long, device=labels.device)
    autocast = _autocast(labels.device)
    with torch.no_grad(), autocast:
        for start in range(0, len(labels), batch_size):
            batch = data.normalize(images[start : start + batch_size])
            if channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            correct += (net(batch).argmax(dim=1) == labels[start : start + batch_size]).sum()
    net.train(was_training)
    return correct.item() / len(labels)


def _autocast(device: torch.device):
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def measure_latency(net: nn.Module, input_shape: tuple[int, int, int], *, batch_size: int,
                    device: torch.device, channels_last: bool = False, repeats: int = 3) -> float:
    """Fastest of a few timed inference batches on the device, in ms (after a warm-up).

    The minimum, not the median: on a shared machine the other runs only ever add time.
    """
    was_training = net.training
    net.eval()
    batch = torch.zeros(batch_size, *input_shape, device=device)
    if channels_last:
        batch = batch.contiguous(memory_format=torch.channels_last)
    timings = []
    with torch.no_grad(), _autocast(device):
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


# ---- the LightningModule -------------------------------------------------------------------------
_HEAP_FROZEN = False


def _lightning():
    global _HEAP_FROZEN
    import pytorch_lightning as pl

    if not _HEAP_FROZEN:
        # The import-time heap never dies: freezing it makes each trial's gc.collect() (CUDA
        # memory release) cost ~0 ms instead of ~220 ms (bench/overhead.py).
        gc.freeze()
        _HEAP_FROZEN = True
        # Once: each setLevel clears every logger's cache (~0.2 ms apiece under cProfile).
        for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
            logging.getLogger(name).setLevel(logging.ERROR)
        _skip_callback_plugin_scan()
    # Each call: a caller's `warnings.catch_warnings()` (pytest's, for one) resets the filters.
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    warnings.filterwarnings("ignore", module="lightning_fabric")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    return pl


def _no_external_callbacks(group: str) -> list:
    return []


def _skip_callback_plugin_scan() -> None:
    """Every Trainer() reads the entry points of all installed packages looking for plugin
    callbacks: most of its construction (Trainer() took 3.2-4.4 ms with it, 0.7-0.9 ms without,
    bench/overhead.py). Installed packages don't
    change while a search runs, so when the first look finds none, later Trainers skip it."""
    from pytorch_lightning.trainer.connectors import callback_connector

    lookup = getattr(callback_connector, "_load_external_callbacks", None)
    if lookup is not None and not lookup("pytorch_lightning.callbacks_factory"):
        callback_connector._load_external_callbacks = _no_external_callbacks


def _make_module_class():
    pl = _lightning()

    class CandidateModule(pl.LightningModule):
        """Wraps a built network with its optimiser, schedule and per-epoch bookkeeping."""

        def __init__(self, net: nn.Module, arch: Architecture, data: DeviceData, control: TrialControl,
                     *, total_steps: int, start_epoch: int, resume_state: dict | None,
                     channels_last: bool, result: TrialResult, started: float) -> None:
            super().__init__()
            self.net = net
            self.arch = arch
            self.data = data
            self.control = control
            self.total_steps = total_steps
            self.start_epoch = start_epoch
            self.resume_state = resume_state
            self.channels_last = channels_last
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
            groups = [{"params": decay, "weight_decay": settings.weight_decay},
                      {"params": no_decay, "weight_decay": 0.0}]  # no decay on biases and norms
            if settings.optimizer == "sgd":
                optimizer = torch.optim.SGD(groups, lr=settings.lr, momentum=settings.momentum, nesterov=True)
            else:
                optimizer = torch.optim.AdamW(groups, lr=settings.lr)
            total = self.total_steps
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total, settings))
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

        def on_train_start(self) -> None:
            if self.resume_state is not None:
                self.trainer.optimizers[0].load_state_dict(self.resume_state["optimizer"])
                self.trainer.lr_scheduler_configs[0].scheduler.load_state_dict(self.resume_state["scheduler"])

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_index: int) -> torch.Tensor:
            images, labels = batch
            with _autocast(images.device):
                logits = self.net(images)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.arch.train.label_smoothing)
            detached = loss.detach()
            self.loss_sum += detached
            self.loss_steps += 1
            control = self.control
            if self.loss_steps % NAN_CHECK_EVERY == 1 and not torch.isfinite(detached):
                raise StopTrial("nan", f"the training loss became {detached.item()} at epoch "
                                f"{self.start_epoch + self.current_epoch + 1}; lower the learning rate")
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
                raise StopTrial("nan", f"the training loss became {mean_loss} at epoch {epoch}; lower the learning rate")
            result = self.result
            result.train_loss.append(mean_loss)
            result.epochs_run = epoch
            control = self.control
            if control.validate:
                accuracy = evaluate(self.net, self.data, images=self.data.val_x, labels=self.data.val_y,
                                    channels_last=self.channels_last)
                if not result.val_acc or accuracy > max(result.val_acc):
                    # The leaderboard ranks by the best epoch, so the kept weights are that epoch's.
                    result.best_state = {key: value.detach().to("cpu", copy=True) for key, value in self.net.state_dict().items()}
                result.val_acc.append(accuracy)
            # After the last epoch nothing is left to resume. Before it, a checkpoint goes to
            # disk at most every checkpoint_every_s (short epochs would spend more on writing
            # than a kill loses); the others stay in memory, written only if the trial is
            # interrupted cleanly (Ctrl-C, the deadline), so a clean stop loses no epoch.
            if control.checkpoint_path is not None and epoch < self.arch.train.epochs:
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
                    raise StopTrial("pruned", f"pruned after epoch {epoch} at {result.val_acc[-1]:.2%} validation accuracy: {reason}")

    return CandidateModule


_MODULE_CLASS = None


def _module_class():
    global _MODULE_CLASS
    if _MODULE_CLASS is None:
        _MODULE_CLASS = _make_module_class()
    return _MODULE_CLASS


# ---- checkpoints ---------------------------------------------------------------------------------
def checkpoint_state(module, result: TrialResult) -> dict:
    """Everything a resume needs after a finished epoch, copied: training goes on changing it."""
    return {
        "epoch": result.epochs_run,
        "model": {key: value.detach().clone() for key, value in module.net.state_dict().items()},
        "optimizer": copy.deepcopy(module.trainer.optimizers[0].state_dict()),
        "scheduler": copy.deepcopy(module.trainer.lr_scheduler_configs[0].scheduler.state_dict()),
        "generator": module.generator.get_state() if module.generator is not None else None,
        "torch_rng": torch.get_rng_state(),  # dropout masks come from the global generator
        "cuda_rng": torch.cuda.get_rng_state(module.data.train_y.device) if module.data.train_y.device.type == "cuda" else None,
        "val_acc": list(result.val_acc),
        "train_loss": list(result.train_loss),
        "train_seconds": result.train_seconds + (time.monotonic() - module.started),
        "seed": module.control.seed,
    }


def write_checkpoint(path: Path, state: dict) -> None:
    """Written atomically: a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    torch.save(state, temp)
    temp.replace(path)


def load_checkpoint(path: Path | None) -> dict | None:
    if path is None or not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged checkpoint only costs the epochs it held
        return None


# ---- one candidate ----------------------------------------------------------------------------------
def check_candidate(arch: Architecture, input_shape: tuple[int, int, int], num_classes: int, *,
                    max_params: int | None = None, max_flops: float | None = None) -> TrialResult | None:
    """Params and FLOPs before any training; a result only when the candidate must not train."""
    return _build_checked(arch, input_shape, num_classes, max_params=max_params, max_flops=max_flops)[1]


def _build_checked(arch: Architecture, input_shape: tuple[int, int, int], num_classes: int, *,
                   max_params: int | None, max_flops: float | None) -> tuple[nn.Module | None, TrialResult | None]:
    """The built network when it may train, else the result that says why not."""
    try:
        net = build_model(arch, input_shape, num_classes)
    except InfeasibleArchitecture as error:
        return None, TrialResult("infeasible", f"cannot fit {'x'.join(map(str, input_shape))} input: {error}")
    params = sum(parameter.numel() for parameter in net.parameters())
    flops = forward_flops(arch, input_shape, num_classes)
    if max_params is not None and params > max_params:
        return None, TrialResult("over_budget", f"{params:,} parameters exceed max_params={max_params:,}", params=params, flops=flops)
    if max_flops is not None and flops > max_flops:
        return None, TrialResult("over_budget", f"{flops:,} FLOPs exceed max_flops={max_flops:,.0f}", params=params, flops=flops)
    return net, None


def train_candidate(arch: Architecture, data: DeviceData, *, control: TrialControl | None = None,
                    max_params: int | None = None, max_flops: float | None = None,
                    net: nn.Module | None = None) -> TrialResult:
    """Train one candidate on resident data and score it on the whole validation split.

    Never raises for a bad candidate: infeasible shapes, budgets, OOM (after retrying with
    gradient accumulation at the same effective batch), NaN losses and timeouts come back
    as a result with an outcome and a reason. `net` trains a given network instead of
    building one (fine-tuning).
    """
    control = control or TrialControl()
    input_shape, num_classes = data.input_shape, data.num_classes
    given = net is not None
    if not given:
        torch.manual_seed(control.seed)  # weights: reproducible from the trial's seed
        net, rejected = _build_checked(arch, input_shape, num_classes, max_params=max_params, max_flops=max_flops)
        if rejected is not None:
            return rejected
    micro_batch = arch.train.batch_size
    while True:
        try:
            return _train_once(arch, data, control, micro_batch=micro_batch, net=net)
        except torch.OutOfMemoryError:
            _release_memory()
            if micro_batch <= 1:
                return TrialResult("oom", f"out of device memory even with micro-batches of 1 image (batch {arch.train.batch_size})")
            micro_batch //= 2  # same effective batch: gradients accumulate over the micro-batches
            if not given:  # the failed attempt changed the weights: start again from the seed
                torch.manual_seed(control.seed)
                net = build_model(arch, input_shape, num_classes)
        finally:
            _release_memory()


def _train_once(arch: Architecture, data: DeviceData, control: TrialControl, *, micro_batch: int,
                net: nn.Module) -> TrialResult:
    pl = _lightning()
    device = data.train_y.device
    channels_last = device.type == "cuda"
    net = net.to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    result = TrialResult("complete", params=sum(p.numel() for p in net.parameters()), micro_batch=micro_batch)
    result.flops = forward_flops(arch, data.input_shape, data.num_classes)
    measured = {"params": result.params, "flops": result.flops}
    if control.measure_latency:
        result.latency_ms = measure_latency(net, data.input_shape, batch_size=min(arch.train.batch_size, 256),
                                            device=device, channels_last=channels_last)
        measured["latency_ms"] = result.latency_ms
    if control.on_measured is not None:
        control.on_measured(measured)

    resume_state = load_checkpoint(control.checkpoint_path)
    start_epoch = 0
    generator = make_generator(control.seed, device)
    if resume_state is not None:
        net.load_state_dict(resume_state["model"])
        start_epoch = int(resume_state["epoch"])
        result.val_acc = list(resume_state["val_acc"])
        result.train_loss = list(resume_state["train_loss"])
        result.epochs_run = start_epoch
        result.train_seconds = float(resume_state["train_seconds"])
        if resume_state.get("generator") is not None:
            generator.set_state(resume_state["generator"])
        if resume_state.get("torch_rng") is not None:
            torch.set_rng_state(resume_state["torch_rng"])
        if resume_state.get("cuda_rng") is not None and device.type == "cuda":
            torch.cuda.set_rng_state(resume_state["cuda_rng"], device)
    epochs_left = arch.train.epochs - start_epoch
    batches = ResidentBatches(data, batch_size=arch.train.batch_size, micro_batch=micro_batch,
                              augment_settings=arch.augment, generator=generator, channels_last=channels_last)
    if epochs_left <= 0:
        result.model = net.cpu()
        return result

    started = time.monotonic()
    module = _module_class()(net, arch, data, control, total_steps=batches.steps * arch.train.epochs,
                             start_epoch=start_epoch, resume_state=resume_state, channels_last=channels_last,
                             result=result, started=started)
    module.generator = generator
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=[device.index or 0] if device.type == "cuda" else 1,
        max_epochs=epochs_left,
        accumulate_grad_batches=batches.micro_per_step,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        deterministic=False,
        benchmark=device.type == "cuda",
    )
    try:
        trainer.fit(module, train_dataloaders=batches)
    except StopTrial as stop:
        result.outcome, result.reason = stop.outcome, stop.reason
        if stop.outcome == "interrupted" and module.unsaved_checkpoint is not None:
            write_checkpoint(control.checkpoint_path, module.unsaved_checkpoint)  # resume loses no epoch
    except torch.OutOfMemoryError:
        raise
    finally:
        elapsed = time.monotonic() - started
        result.train_seconds += elapsed
        images_seen = (result.epochs_run - start_epoch) * batches.images_per_epoch
        result.images_per_sec = images_seen / elapsed if elapsed > 0 else 0.0
        del trainer, module
    result.model = net.cpu()
    if result.outcome == "complete" and control.validate and not result.val_acc:
        result.outcome, result.reason = "error", "training ended without a finished epoch"
    return result


def _release_memory() -> None:
    """Return a finished trial's device memory. On CPU, reference counting already freed the
    tensors and a full gc pass costs more than a small trial's epoch (bench/overhead.py)."""
    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()
