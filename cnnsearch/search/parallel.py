"""Owns starting several local worker processes for one search and placing them on devices.

Each worker is a `cnnsearch worker` process sharing the run's study (Optuna's distributed
optimisation: the storage is the only coordination). GPUs are shared out round-robin; on
CPU the cores are split so workers do not oversubscribe them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cnnsearch.run.folder import RunDir


def parse_workers(text: str | int) -> int | None:
    """`--workers` checked without torch: the count asked for, or None for auto."""
    cleaned = str(text).strip().lower()
    if cleaned == "auto":
        return None
    from cnnsearch.errors import UserError

    if not cleaned.isdigit() or int(cleaned) < 1:
        raise UserError(f"--workers must be auto or a number of at least 1, but got {text!r}")
    return int(cleaned)


def resolve_workers(text: str | int, device: str) -> int:
    """`--workers`: a count, or auto (one per visible GPU for auto/cuda; 1 on a CPU).

    On the 2-core CPU machine 2 workers ran about twice the trials of 1 in a 10-minute
    Fashion-MNIST search (35 against 15), but their winner's test accuracy was no better
    (89.4% against 89.5%, one run each, as reported in issue 12): more trials ranked by noisy
    validation scores, not better networks. So auto means 1 on a CPU until a measurement says otherwise.
    """
    asked = parse_workers(text)
    if asked is not None:
        return asked
    if device in ("auto", "cuda"):
        import torch  # only auto counts GPUs: a given count needs no torch

        return max(1, torch.cuda.device_count())
    return 1


def worker_devices(workers: int, device: str) -> list[str]:
    """One device per worker: all visible GPUs in turn for auto/cuda, else the one asked for."""
    if device in ("auto", "cuda"):
        import torch

        count = torch.cuda.device_count()
        if count:
            return [f"cuda:{index % count}" for index in range(workers)]
        return ["cpu"] * workers
    return [device] * workers


def joined_index() -> int:
    """The worker index of a `cnnsearch worker` given no --worker-index: drawn from this machine's
    name and the process id, above those `search --workers N` gives (0 .. N-1). With one default
    index, workers joined by hand at the same time drew the same sampler stream and trained the
    same candidates side by side."""
    return 1000 + zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode()) % 1_000_000


def stop_with_parent(parent: int) -> bool:
    """In a worker that `search --workers N` started (process `parent`): be sent SIGTERM when the
    search dies (Linux's PR_SET_PDEATHSIG), which stops it like Ctrl-C, its trial saved. A
    SIGKILLed search left its workers training, and a resume then added N more beside them.
    False when the search is gone already (before the request could take effect)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the workers outlive a killed search
        pass
    return os.getppid() == parent


def spawn_workers(
    run: RunDir,
    *,
    workers: int,
    timeout_s: float | None,
    device: str,
    checkpoint_every_s: float,
    until: float | None = None,
) -> list[subprocess.Popen]:
    """Start `workers` processes; they stop by themselves at the study's target, deadline or Ctrl-C.
    `until` (Unix time) is the search's own deadline: each worker stops then, not `timeout_s`
    after its start-up (importing torch takes seconds); `timeout_s` stays the budget they share out."""
    devices = worker_devices(workers, device)
    cpu_workers = sum(1 for name in devices if name == "cpu")
    threads = max(1, (os.cpu_count() or 1) // max(1, cpu_workers))
    processes = []
    for index, worker_device in enumerate(devices):
        command = [
            sys.executable,
            "-m",
            "cnnsearch",
            "worker",
            "--name",
            run.name,
            "--runs-dir",
            str(run.runs_dir),
            "--device",
            worker_device,
            "--worker-index",
            str(index),
            "--quiet",
        ]
        if worker_device == "cpu":
            command += ["--threads", str(threads)]
        if timeout_s:
            command += ["--timeout", f"{timeout_s}s"]
        if until is not None:
            command += ["--until", f"{until:.3f}"]
        command += ["--checkpoint-every", f"{checkpoint_every_s}s" if checkpoint_every_s > 0 else "epoch"]
        processes.append(subprocess.Popen([*command, "--parent", str(os.getpid())]))
    return processes


@dataclass(frozen=True)
class WorkerExit:
    """A worker that ended with an error or a signal."""

    index: int  # its --worker-index
    pid: int
    returncode: int  # negative: killed by that signal

    def describe(self, study: Any) -> str:
        """`worker 1 (pid 4242) was killed by SIGKILL; its trial 3 was re-run`, from the study."""
        if self.returncode < 0:
            try:
                how = f"was killed by {signal.Signals(-self.returncode).name}"
            except ValueError:
                how = f"was killed by signal {-self.returncode}"
        else:
            how = f"stopped with exit code {self.returncode}"
        from cnnsearch.outcomes import TrialRecord

        worker = f"{socket.gethostname()}:{self.pid}"
        records = [(trial.number, TrialRecord.of(trial)) for trial in study.get_trials(deepcopy=False)]
        taken_over = [
            number for number, record in records if record.worker == worker and record.outcome == "interrupted"
        ]
        line = f"worker {self.index} (pid {self.pid}) {how}"
        if taken_over:
            line += f"; its trial {', '.join(map(str, taken_over))} was re-run by the other workers"
        return line


def run_workers(
    run: RunDir, processes: list[subprocess.Popen], *, on_poll: Callable[[Any], None], poll_s: float = 1.0
) -> list[WorkerExit]:
    """Watch the workers `spawn_workers` started: call `on_poll(study)` about every `poll_s` while
    any runs and once after the last ends; return those that ended with an error or were killed
    (Ctrl-C's 130 is neither)."""
    study = run.load_study()
    while True:
        running = any(process.poll() is None for process in processes)
        on_poll(study)
        if not running:
            break
        time.sleep(poll_s)
    return [
        WorkerExit(index=index, pid=process.pid, returncode=process.returncode)
        for index, process in enumerate(processes)
        if process.returncode not in (0, 130)
    ]
