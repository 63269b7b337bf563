"""Owns what a user asks a search for (`SearchSettings`), its defaults, and parsing the CLI's
text options (durations, `--checkpoint-every`, `--objective`).
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cnnsearch.errors import UserError
from cnnsearch.run.folder import package_versions

OBJECTIVES = ("accuracy", "params", "flops", "latency")


@dataclass
class SearchSettings:
    """What the user asked for; validated by `prepare_run` before anything is written."""

    name: str
    space: str | None = None  # path of the space file; None = the run's saved copy on resume
    data: str | None = None  # --data spec; None = the run's on resume
    runs_dir: str = "runs"
    data_dir: str | None = None
    image_size: int | None = None
    subset: int | None = None
    trials: int | None = None  # requested total; None = the run's (or 20 for a new run)
    timeout_s: float | None = None  # whole search
    epochs: int | None = None
    trial_timeout_s: float | None = None
    # Settings that define a run: None = not given (a new run takes NEW_RUN_DEFAULTS, a resume
    # keeps the run's own; a given value that differs from the run's is refused).
    sampler: str | None = None
    pruner: str | None = None
    seed: int | None = None
    device: str = "auto"
    storage: str | None = None  # RDB URL; None = the local journal file
    objective: tuple[str, ...] | None = None
    val_fraction: float = 0.15
    keep_weights: int | None = None
    enqueue: tuple[str, ...] = ()  # architecture JSON files to train first
    from_run: str | None = None  # warm-start from another run's best trials
    fork: str | None = None  # start a new run warm-started from this one
    starters: bool | None = None  # train the space's [[starter]] candidates first; None: all samplers but random
    command: str = ""


DEFAULT_CHECKPOINT_EVERY_S = 30.0  # a killed trial resumes from at most this far back


NEW_RUN_DEFAULTS = {"sampler": "tpe", "pruner": "asha", "seed": 0, "objective": ("accuracy",), "keep_weights": 3}


# run.json field for each setting a resume must not change silently
RUN_DEFINING = {
    "sampler": "sampler",
    "pruner": "pruner",
    "seed": "seed",
    "objective": "objective",
    "keep_weights": "keep_weights",
    "subset": "subset",
    "image_size": "image_size",
    "data_dir": "data_dir",
    "trial_timeout_s": "trial_timeout",
}


def parse_duration(text: str | None, *, option: str | None = None) -> float | None:
    """`90`, `90s`, `20m`, `2h`, `1h30m` -> seconds; `option` (e.g. `--timeout`) leads the error."""
    if text is None:
        return None
    import re

    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    cleaned = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", cleaned):
        seconds = float(cleaned)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", cleaned)
        if not parts or "".join(number + unit for number, unit in parts) != cleaned:
            where = f"{option} {text}: " if option else ""
            raise UserError(f"{where}cannot read the duration {text!r}; use e.g. 90s, 20m, 2h or 1h30m")
        seconds = sum(float(number) * units[unit] for number, unit in parts)
    if seconds <= 0:
        if option:
            raise UserError(f"{option} {text}: the duration must be positive, e.g. 90s, 20m or 2h")
        raise UserError(f"the duration {text!r} must be positive")
    return seconds


def parse_checkpoint_every(text: str | None) -> float:
    """`--checkpoint-every`: a duration, or `epoch` (0: after every epoch). Default 30 s."""
    if text is None:
        return DEFAULT_CHECKPOINT_EVERY_S
    if text.strip().lower() == "epoch":
        return 0.0
    try:
        return parse_duration(text)
    except UserError:
        raise UserError(
            f"--checkpoint-every {text!r} is not valid; use a duration such as 30s or 5m, "
            f"or `epoch` to save after every epoch"
        ) from None


def parse_objective(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in names if name not in OBJECTIVES]
    if unknown or not names or names[0] != "accuracy" or len(set(names)) != len(names) or len(names) > 2:
        raise UserError(
            f"--objective {text!r} is not valid; use accuracy, or accuracy plus one cost: "
            f"accuracy,params  accuracy,flops  accuracy,latency"
        )
    return names


def versions() -> dict[str, str]:
    return package_versions(
        ("cnnsearch", "torch", "optuna", "pytorch-lightning", "numpy", "scikit-learn", "onnx", "onnxruntime")
    )


def default_run_name(space_path: str) -> str:
    return f"{Path(space_path).stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def command_line() -> str:
    return shlex.join(["cnnsearch", *sys.argv[1:]])


DEFAULT_TRIALS = 20
UNLIMITED_TRIALS = 100_000  # the target of a --timeout search without --trials: the deadline ends it
