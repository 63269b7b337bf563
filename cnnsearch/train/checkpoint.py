"""Owns resume checkpoints: everything needed to continue a trial after its last finished
epoch, written atomically (a kill never leaves half a file).
"""

from __future__ import annotations

import copy
import io
import time
from pathlib import Path

import torch

from cnnsearch.run.folder import write_atomic
from cnnsearch.train.result import TrialResult


def checkpoint_state(module, result: TrialResult) -> dict:
    """Everything a resume needs after a finished epoch, copied: training goes on changing it."""
    return {
        "network": module.arch.canonical_hash(),  # whose it is: a reused trial number must not resume it
        "epoch": result.epochs_run,
        "model": {key: value.detach().clone() for key, value in module.net.state_dict().items()},
        "optimizer": copy.deepcopy(module.trainer.optimizers[0].state_dict()),
        "scheduler": copy.deepcopy(module.trainer.lr_scheduler_configs[0].scheduler.state_dict()),
        "generator": module.generator.get_state() if module.generator is not None else None,
        "torch_rng": torch.get_rng_state(),  # dropout masks come from the global generator
        "cuda_rng": torch.cuda.get_rng_state(module.data.train_y.device)
        if module.data.train_y.device.type == "cuda"
        else None,
        "val_acc": list(result.val_acc),
        "val_correct": result.val_correct,
        "best_model": None if best_is_last(result) else result.best_state,  # copies already, never changed
        "train_loss": list(result.train_loss),
        "train_seconds": result.train_seconds + (time.monotonic() - module.started),
        "seed": module.control.seed,
    }


def best_is_last(result: TrialResult) -> bool:
    """Whether the last finished epoch is the best one so far (the first of equal scores wins)."""
    scores = result.val_acc
    return not scores or scores.index(max(scores)) == len(scores) - 1


def restore_best(result: TrialResult, state: dict) -> None:
    """The best epoch's weights after a resume: the checkpoint's own weights when its last epoch
    was the best, else those it kept (a checkpoint from before they were kept has none)."""
    if not result.val_acc:
        return
    if best_is_last(result):
        result.best_state = {key: value.clone() for key, value in state["model"].items()}
    elif state.get("best_model") is not None:
        result.best_state = dict(state["best_model"])


def write_checkpoint(path: Path, state: dict) -> None:
    """Written atomically: a kill never leaves half a file, a full disk no temp file (DiskFull)."""
    buffer = io.BytesIO()  # torch.save onto a full disk says nothing of the errno, Python's write does
    torch.save(state, buffer)
    write_atomic(path, buffer.getvalue(), what=f"the resume checkpoint {path}", fsync=False)


def checkpoint_epochs(path: Path, network: str | None = None) -> int:
    """The finished epochs a resume checkpoint holds (0: none, a damaged one, or, given the
    `network`'s canonical hash, another network's, which training ignores too)."""
    state = load_checkpoint(path)
    if state is not None and network is not None and state.get("network", network) != network:
        return 0
    try:
        return max(0, int(state["epoch"])) if state is not None else 0
    except (KeyError, TypeError, ValueError):
        return 0


def load_checkpoint(path: Path | None) -> dict | None:
    if path is None or not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a damaged checkpoint only costs the epochs it held
        return None
