"""Owns `train_candidate`: check a candidate's shape and budget, train it on resident data with
Lightning, retry with micro-batches (gradient accumulation, same effective batch) after an
out-of-memory error, and return a `TrialResult`. Never raises for a bad candidate.

The device's choices (channels-last, bf16 autocast, the first micro-batch) come from one
`DevicePlan` (`train.plan`), so each runs on the CPU too when a test forces it.

The trainer is built for thousands of short trainings: data stays resident on the device as
uint8, metrics stay on the device until an epoch ends, and Lightning's banners, progress bars,
loggers and checkpoints are off.
"""

from __future__ import annotations

import gc
import time

import torch
from torch import nn

from cnnsearch.data.augment import make_generator
from cnnsearch.data.device import DeviceData
from cnnsearch.errors import InfeasibleArchitecture
from cnnsearch.model.build import build_model
from cnnsearch.spec import Architecture, forward_flops
from cnnsearch.train.checkpoint import load_checkpoint, restore_best, write_checkpoint
from cnnsearch.train.evaluate import measure_latency
from cnnsearch.train.lightning_private import import_lightning
from cnnsearch.train.module import ResidentBatches, candidate_module_class
from cnnsearch.train.plan import DevicePlan, plan_for
from cnnsearch.train.result import StopTrial, TrialControl, TrialResult
from cnnsearch.words import count


def resolve_device(name: str | None = "auto") -> torch.device:
    """`auto` picks CUDA when present, else CPU; anything else must exist here.

    Also checks CNNSEARCH_DEVICE_PLAN, so a bad value stops the command before anything trains.
    """
    device = _resolve_device(name)
    plan_for(device)
    return device


def _resolve_device(name: str | None) -> torch.device:
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
        raise UserError(
            f"--device {name}: only {count(torch.cuda.device_count(), 'GPU')} {'is' if torch.cuda.device_count() == 1 else 'are'} visible; use cuda:0 .. cuda:{torch.cuda.device_count() - 1}"
        )
    return device


def check_candidate(
    arch: Architecture,
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    max_params: int | None = None,
    max_flops: float | None = None,
) -> TrialResult | None:
    """Params and FLOPs before any training; a result only when the candidate must not train."""
    return _build_checked(arch, input_shape, num_classes, max_params=max_params, max_flops=max_flops)[1]


def _build_checked(
    arch: Architecture,
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    max_params: int | None,
    max_flops: float | None,
) -> tuple[nn.Module | None, TrialResult | None]:
    """The built network when it may train, else the result that says why not."""
    try:
        net = build_model(arch, input_shape, num_classes)
    except InfeasibleArchitecture as error:
        return None, TrialResult("infeasible", f"cannot fit {'x'.join(map(str, input_shape))} input: {error}")
    params = sum(parameter.numel() for parameter in net.parameters())
    flops = forward_flops(arch, input_shape, num_classes)
    if max_params is not None and params > max_params:
        return None, TrialResult(
            "over_budget", f"{params:,} parameters exceed max_params={max_params:,}", params=params, flops=flops
        )
    if max_flops is not None and flops > max_flops:
        return None, TrialResult(
            "over_budget", f"{flops:,} FLOPs exceed max_flops={max_flops:,.0f}", params=params, flops=flops
        )
    return net, None


def train_candidate(
    arch: Architecture,
    data: DeviceData,
    *,
    control: TrialControl | None = None,
    max_params: int | None = None,
    max_flops: float | None = None,
    net: nn.Module | None = None,
) -> TrialResult:
    """Train one candidate on resident data and score it on the whole validation split.

    Never raises for a bad candidate: infeasible shapes, budgets, OOM (after retrying with
    gradient accumulation at the same effective batch), NaN losses and timeouts come back
    as a result with an outcome and a reason. `net` trains a given network instead of
    building one (fine-tuning).
    """
    control = control or TrialControl()
    input_shape, num_classes = data.input_shape, data.num_classes
    given = net is not None
    if given:
        # A failed attempt may have stepped the weights and batch-norm statistics and drawn dropout
        # masks: a retry starts again from this copy (weights only: a small share of memory).
        start = _StartingPoint(net, data.train_y.device)
    else:
        torch.manual_seed(control.seed)  # weights: reproducible from the trial's seed
        net, rejected = _build_checked(arch, input_shape, num_classes, max_params=max_params, max_flops=max_flops)
        if rejected is not None:
            return rejected
    plan = plan_for(data.train_y.device, control.plan)
    micro_batch = plan.first_micro_batch(arch.train.batch_size)  # a forced one runs the retry's path at once
    while True:
        try:
            return _train_once(arch, data, control, plan=plan, micro_batch=micro_batch, net=net)
        except RuntimeError as error:  # torch.OutOfMemoryError is one
            if not is_out_of_memory(error):
                raise
            where = "device" if isinstance(error, torch.OutOfMemoryError) else "CPU"
            del error  # its traceback holds the failed attempt's tensors
            gc.collect()  # those frames form cycles: free them before retrying, on the CPU too
            _release_memory()
            if micro_batch <= 1:
                return TrialResult(
                    "oom", f"out of {where} memory even with micro-batches of 1 image (batch {arch.train.batch_size})"
                )
            micro_batch //= 2  # same effective batch: gradients accumulate over the micro-batches
            if given:
                start.restore(net)
            else:  # the failed attempt changed the weights: start again from the seed
                torch.manual_seed(control.seed)
                net = build_model(arch, input_shape, num_classes)
        finally:
            _release_memory()


class _StartingPoint:
    """A given network's weights and the random state before its first attempt, on the CPU."""

    def __init__(self, net: nn.Module, device: torch.device) -> None:
        self.state = {key: value.detach().to("cpu", copy=True) for key, value in net.state_dict().items()}
        self.device = device
        self.torch_rng = torch.get_rng_state()  # dropout masks on the CPU
        self.cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def restore(self, net: nn.Module) -> None:
        net.load_state_dict(self.state)
        torch.set_rng_state(self.torch_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state(self.cuda_rng, self.device)


def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA's OutOfMemoryError and for the RuntimeError of torch's CPU allocator."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    # The CPU allocator raises a plain RuntimeError: "DefaultCPUAllocator: can't allocate memory".
    return isinstance(error, RuntimeError) and "DefaultCPUAllocator: can't allocate memory" in str(error)


def _train_once(
    arch: Architecture, data: DeviceData, control: TrialControl, *, plan: DevicePlan, micro_batch: int, net: nn.Module
) -> TrialResult:
    """One attempt at `micro_batch` images per forward/backward; the first attempt, or one after an OOM."""
    pl = import_lightning()
    device = data.train_y.device
    channels_last = plan.channels_last
    net = net.to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    result = TrialResult("complete", params=sum(p.numel() for p in net.parameters()), micro_batch=micro_batch)
    result.flops = forward_flops(arch, data.input_shape, data.num_classes)
    measured = {"params": result.params, "flops": result.flops}
    if device.type == "cpu":  # the final schedule scales a trial's epoch time by the threads it had
        measured["threads"] = torch.get_num_threads()
    if control.measure_latency:
        result.latency_ms = measure_latency(
            net,
            data.input_shape,
            batch_size=min(micro_batch, 256),  # shrinks with an out-of-memory retry, as training does
            device=device,
            plan=plan,
        )
        measured["latency_ms"] = result.latency_ms
    if control.on_measured is not None:
        control.on_measured(measured)

    resume_state = load_checkpoint(control.checkpoint_path)
    if resume_state is not None and resume_state.get("network", arch.canonical_hash()) != arch.canonical_hash():
        # Another network's, left under a trial number used again (a journal that lost its tail): ignored.
        resume_state = None
    start_epoch = 0
    generator = make_generator(control.seed, device)
    if resume_state is not None:
        net.load_state_dict(resume_state["model"])
        start_epoch = int(resume_state["epoch"])
        result.val_acc = list(resume_state["val_acc"])
        result.train_loss = list(resume_state["train_loss"])
        result.val_correct = str(resume_state.get("val_correct") or "")  # the best epoch may be before the cut
        restore_best(result, resume_state)
        result.epochs_run = start_epoch
        result.train_seconds = float(resume_state["train_seconds"])
        if resume_state.get("generator") is not None:
            generator.set_state(resume_state["generator"])
        if resume_state.get("torch_rng") is not None:
            torch.set_rng_state(resume_state["torch_rng"])
        if resume_state.get("cuda_rng") is not None and device.type == "cuda":
            torch.cuda.set_rng_state(resume_state["cuda_rng"], device)
        if control.on_resume is not None:
            control.on_resume(list(result.val_acc))
    epochs_left = arch.train.epochs - start_epoch
    batches = ResidentBatches(
        data,
        batch_size=arch.train.batch_size,
        micro_batch=micro_batch,
        augment_settings=arch.augment,
        generator=generator,
        channels_last=channels_last,
    )
    if epochs_left <= 0:
        result.model = net.cpu()
        return result

    started = time.monotonic()
    module = candidate_module_class()(
        net,
        arch,
        data,
        control,
        total_steps=batches.steps * arch.train.epochs,
        start_epoch=start_epoch,
        resume_state=resume_state,
        plan=plan,
        batches=batches,
        result=result,
        started=started,
    )
    module.generator = generator
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=[device.index or 0] if device.type == "cuda" else 1,
        # The Trainer counts from the resume point; a re-plan may run up to control.max_epochs in all.
        max_epochs=epochs_left if control.replan is None else max(epochs_left, (control.max_epochs or 0) - start_epoch),
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
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    try:
        try:
            trainer.fit(module, train_dataloaders=batches)
        except SIGTERMException:  # a SystemExit: uncaught, the process ended 0 with the trial RUNNING
            raise StopTrial("interrupted", "stopped by SIGTERM") from None
    except StopTrial as stop:
        result.outcome, result.reason = stop.outcome, stop.reason
        if stop.outcome == "interrupted" and module.unsaved_checkpoint is not None:
            write_checkpoint(control.checkpoint_path, module.unsaved_checkpoint)  # resume loses no epoch
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
