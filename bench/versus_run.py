"""Running one contender of bench/versus.py end to end, and reading what it left on disk.

A contender is a command line: cnnsearch (search, then export, or one search with --export) or
the hand-written peer (bench/peers/optuna_lightning.py). Each runs in its own subprocess from the
repository root, so the worktree's cnnsearch is the one imported; its wall time counts from the
moment the process is started to the moment its final model is on disk. Its trials are read back
afterwards from its study (cnnsearch) or its JSON (the peer), and its model file is scored on the
official test images here, by loading the file itself.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import _common

PEER = _common.BENCH_DIR / "peers" / "optuna_lightning.py"
END_TO_END = ("two-step", "export-flag")  # how a cnnsearch contender gets to its final model
CUT_OUTCOMES = ("pruned", "timeout", "interrupted", "running")  # trained, then stopped before the end
OVER_SHARE = 0.10  # a contender whose wall time exceeds the budget by more than this is "over"


@dataclass(frozen=True)
class Contender:
    name: str
    kind: str  # "cnnsearch" or "peer"
    args: tuple[str, ...] = ()  # extra command-line arguments


@dataclass
class Result:
    """One contender, one seed: what it produced and what it cost."""

    contender: str
    seed: int
    budget_s: float
    wall_s: float = math.nan  # start of the process to final model on disk
    steps_s: dict[str, float] = field(default_factory=dict)  # wall time per command
    model: Path | None = None  # TorchScript file
    mean: list[float] = field(default_factory=list)  # the model's input normalisation
    std: list[float] = field(default_factory=list)
    test_acc: float = math.nan
    params: int | None = None
    counts: dict[str, int] = field(default_factory=dict)  # outcome -> trials
    trial_s: float = 0.0  # seconds spent training trials
    cut_s: float = 0.0  # of which in trials that were pruned or cut
    events: list[tuple[float, float]] = field(default_factory=list)  # (s since start, val acc) per finished trial
    same_images: bool | None = None  # cnnsearch: its split equals the one the peer was given
    error: str = ""
    commands: list[str] = field(default_factory=list)

    @property
    def over(self) -> bool:
        return self.wall_s > self.budget_s * (1 + OVER_SHARE)

    @property
    def finished(self) -> int:
        """Trials that ended within the budget (not the one the deadline cut, nor a re-queued copy)."""
        return sum(n for outcome, n in self.counts.items() if outcome not in ("interrupted", "waiting", "running"))

    @property
    def cut_share(self) -> float:
        return self.cut_s / self.trial_s if self.trial_s > 0 else math.nan

    def best_curve(self) -> list[tuple[float, float]]:
        curve, best = [], -math.inf
        for seconds, accuracy in sorted(self.events):
            if accuracy > best:
                best = accuracy
                curve.append((seconds, best))
        return curve

    @property
    def final_best(self) -> float:
        curve = self.best_curve()
        return curve[-1][1] if curve else math.nan

    def time_to(self, level: float) -> float:
        """Seconds from start until a finished trial reached `level` (inf: never)."""
        for seconds, best in self.best_curve():
            if best >= level - 1e-12:
                return seconds
        return math.inf


def env() -> dict[str, str]:
    values = dict(os.environ)
    values.pop("CNNSEARCH_RUNS_DIR", None)
    values["PYTHONUNBUFFERED"] = "1"
    return values


def timed(command: list[str], log: Path, *, limit_s: float, result: Result, step: str) -> int:
    """Run `command` from the repo root, output to `log`; its wall time goes to result.steps_s."""
    result.commands.append(shlex.join(command))
    started = time.monotonic()
    with log.open("a") as handle:
        handle.write(f"$ {shlex.join(command)}\n")
        handle.flush()
        try:
            code = subprocess.run(
                command, cwd=_common.REPO, stdout=handle, stderr=subprocess.STDOUT, env=env(), timeout=limit_s
            ).returncode
        except subprocess.TimeoutExpired:
            code = -9
            result.error = f"{step} killed after {limit_s:.0f} s"
    result.steps_s[step] = time.monotonic() - started
    if code and not result.error:
        result.error = f"{step} exited {code}; see {log}"
    return code


def data_args(train_images: int | None) -> list[str]:
    return ["--data", "fashion-mnist"] + (["--subset", str(train_images)] if train_images else [])


def run_cnnsearch(
    contender: Contender,
    seed: int,
    budget_s: float,
    work: Path,
    *,
    train_images: int | None,
    mode: str,
    search_share: float,
    device: str,
) -> Result:
    """cnnsearch from start to an exported model. `mode`: two-step (search with --timeout
    search_share x budget, then `cnnsearch export`) or export-flag (one `search --timeout budget
    --export DIR`: the product's own end-to-end path, the default). Everything is timed together."""
    result = Result(contender.name, seed, budget_s)
    name = f"{contender.name}-s{seed}"
    runs, out, log = work / "runs", work / f"{name}-model", work / f"{name}.log"
    cli = [sys.executable, "-m", "cnnsearch"]
    # No --trials: with --timeout, cnnsearch runs as many trials as the budget allows.
    search = [*cli, "search", "--name", name, "--runs-dir", str(runs), *data_args(train_images)]
    search += ["--seed", str(seed), "--device", device]
    if "--space" not in contender.args:  # a named new run needs its space
        search += ["--space", "default"]
    limit = 3 * budget_s + 300  # a safety net only: overruns are reported, not cut
    started = time.time()
    if mode == "two-step":
        search_s = max(1, round(search_share * budget_s))
        code = timed(
            [*search, "--timeout", f"{search_s}s", *contender.args], log, limit_s=limit, result=result, step="search"
        )
        if code == 0:
            export = [*cli, "export", name, "--out", str(out), "--runs-dir", str(runs), "--format", "torchscript"]
            timed([*export, "--device", device], log, limit_s=limit, result=result, step="export")
    elif mode == "export-flag":
        command = [*search, "--timeout", f"{round(budget_s)}s", "--export", str(out), *contender.args]
        timed(command, log, limit_s=limit, result=result, step="search+export")
    else:
        raise ValueError(f"mode must be one of {END_TO_END}, but got {mode!r}")
    result.wall_s = sum(result.steps_s.values())
    if (out / "model.ts").is_file():
        meta = json.loads((out / "model.json").read_text())
        result.model, result.mean, result.std = out / "model.ts", list(meta["mean"]), list(meta["std"])
    elif not result.error:
        result.error = f"no model.ts in {out}; see {log}"
    read_study(result, runs, name, started)
    return result


def read_study(result: Result, runs: Path, name: str, started: float) -> None:
    """Outcome counts, time in cut trials and the best-so-far events of a cnnsearch run."""
    from cnnsearch.outcomes import TrialRecord, trial_outcome
    from cnnsearch.run.folder import RunDir

    run = RunDir(runs, name)
    if not run.run_file.is_file():
        return
    ended = started + result.wall_s
    for trial in run.load_study().get_trials(deepcopy=False):
        outcome = trial_outcome(trial)
        result.counts[outcome] = result.counts.get(outcome, 0) + 1
        if trial.datetime_start is None:
            continue
        stop = trial.datetime_complete.timestamp() if trial.datetime_complete else ended
        seconds = max(0.0, stop - trial.datetime_start.timestamp())
        result.trial_s += seconds
        if outcome in CUT_OUTCOMES:
            result.cut_s += seconds
        accuracy = TrialRecord.of(trial).best_val_acc
        if trial.state.name == "COMPLETE" and accuracy is not None and trial.datetime_complete:
            result.events.append((trial.datetime_complete.timestamp() - started, accuracy))


def run_peer(
    contender: Contender, seed: int, budget_s: float, work: Path, *, train_images: int | None, indices: Path | None
) -> Result:
    """The hand-written Optuna + Lightning search, given the same images and the same budget."""
    result = Result(contender.name, seed, budget_s)
    out, log = work / f"{contender.name}-s{seed}", work / f"{contender.name}-s{seed}.log"
    launched = time.time()
    command = [sys.executable, str(PEER), "--budget", f"{budget_s:g}", "--seed", str(seed), "--out", str(out)]
    command += ["--train-images", str(train_images or 0)] + (["--indices", str(indices)] if indices else [])
    timed([*command, *contender.args], log, limit_s=3 * budget_s + 300, result=result, step="peer")
    result.wall_s = sum(result.steps_s.values())
    summary_file = out / "peer.json"
    if not summary_file.is_file():
        result.error = result.error or f"no peer.json in {out}; see {log}"
        return result
    summary = json.loads(summary_file.read_text())
    result.model, result.mean, result.std = Path(summary["model"]), summary["mean"], summary["std"]
    offset = summary["started_unix"] - launched  # the peer times its trials from after its imports
    for trial in summary["trials"]:
        result.counts[trial["state"]] = result.counts.get(trial["state"], 0) + 1
        result.trial_s += trial["end_s"] - trial["start_s"]
        if trial["state"] in CUT_OUTCOMES:
            result.cut_s += trial["end_s"] - trial["start_s"]
        if trial["state"] == "complete":
            result.events.append((offset + trial["end_s"], trial["val_acc"]))
    return result


def score(result: Result, test_images: object, test_labels: object) -> None:
    """Test accuracy and parameter count of the contender's model file, loaded here."""
    import warnings

    import torch

    if result.model is None or not result.model.is_file():
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(result.model), map_location="cpu").eval()
    images, labels = torch.as_tensor(test_images), torch.as_tensor(test_labels)
    mean = torch.tensor(result.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(result.std, dtype=torch.float32).view(1, -1, 1, 1)
    correct = 0
    with torch.no_grad():
        for start in range(0, len(labels), 1000):
            batch = (images[start : start + 1000].float() / 255 - mean) / std
            correct += int((module(batch).argmax(1) == labels[start : start + 1000]).sum())
    result.test_acc = correct / len(labels)
    result.params = sum(p.numel() for p in module.parameters())
