"""A CPU out-of-memory error is an `oom` like CUDA's: retried with smaller micro-batches (and a
smaller evaluation batch), never recorded as an `error`. Made to happen for real: torch asked
for an impossible tensor, and a training process under an address-space limit.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import ROOT, cli_env

from cnnsearch.train.evaluate import EVAL_BATCH, eval_batch_size
from cnnsearch.train.loop import is_out_of_memory
from cnnsearch.train.plan import PLAN_ENV


def test_the_cpu_allocators_error_is_out_of_memory() -> None:
    with pytest.raises(RuntimeError) as caught:
        torch.empty(2**62, dtype=torch.uint8)
    assert "DefaultCPUAllocator: can't allocate memory" in str(caught.value)
    assert is_out_of_memory(caught.value)
    with pytest.raises(RuntimeError) as other:
        torch.zeros(2, 3) @ torch.zeros(2, 3)
    assert not is_out_of_memory(other.value)


def test_the_evaluation_batch_shrinks_with_the_micro_batch() -> None:
    assert eval_batch_size(256, 256) == EVAL_BATCH
    assert eval_batch_size(64, 256) == EVAL_BATCH // 4
    assert eval_batch_size(1, 4096) == 1


# 256 images of 64 channels at 32x32 are 64 MiB per activation: under a limit of 200 MiB above what
# the process already maps, the full batch cannot train but micro-batches can.
TRAIN_UNDER_A_MEMORY_LIMIT = textwrap.dedent(
    """
    import resource
    import torch
    from cnnsearch.data.device import DeviceData
    from cnnsearch.spec import Architecture, AugmentSettings, ConvLayer, Head, TrainSettings
    from cnnsearch.train.lightning_private import import_lightning
    from cnnsearch.train.loop import train_candidate
    from cnnsearch.train.result import TrialControl

    torch.set_num_threads(1)
    import_lightning()  # loaded before the limit: it is the training that must not fit
    x = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(256) % 2
    data = DeviceData(train_x=x, train_y=y, val_x=x, val_y=y, mean=torch.zeros(3), std=torch.ones(3), class_names=("a", "b"))
    arch = Architecture(
        layers=(ConvLayer(64, 3), ConvLayer(64, 3)),
        head=Head("gap", (), 0.0),
        train=TrainSettings(optimizer="adamw", lr=0.01, batch_size=256, epochs=1),
        augment=AugmentSettings(),
    )
    mapped = int(next(line for line in open("/proc/self/status") if line.startswith("VmSize")).split()[1]) * 1024
    limit = mapped + 200 * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    result = train_candidate(arch, data, control=TrialControl(seed=0))
    print(result.outcome, result.micro_batch, len(result.val_acc), result.reason)
    """
)


def _python(code: str) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter (its memory limit must not reach this process), in float32:
    on a CPU with AMX the default plan is bf16, and under an address-space limit oneDNN's bf16
    path crashed (SIGSEGV) in 2 of 7 runs instead of raising (README, Development)."""
    env = {**cli_env(), PLAN_ENV: "channels_last=off,autocast=off"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)


def test_a_trial_that_exhausts_cpu_memory_retries_with_micro_batches() -> None:
    done = _python(TRAIN_UNDER_A_MEMORY_LIMIT)
    assert done.returncode == 0, done.stderr[-2000:]
    outcome, micro_batch, epochs, *_ = done.stdout.split()
    assert outcome == "complete", done.stdout
    assert 1 <= int(micro_batch) < 256 and int(epochs) == 1


# Two batch-normed convs at 64x64 (64 MiB per activation at 256 images) but few FLOPs: under
# the same limit a real OOM halves the micro-batch; the retry must then train exactly what a
# training forced to start at that micro-batch trains, for a built network and for a given one
# (fine-tuning), whose weights and batch-norm statistics the failed attempts had touched.
RETRY_EQUALS_A_FORCED_MICRO_BATCH = textwrap.dedent(
    """
    import copy
    import resource
    import torch
    from cnnsearch.data.device import DeviceData
    from cnnsearch.model.build import build_model
    from cnnsearch.spec import Architecture, AugmentSettings, ConvLayer, Head, TrainSettings
    from cnnsearch.train.lightning_private import import_lightning
    from cnnsearch.train.loop import train_candidate
    from cnnsearch.train.plan import DevicePlan
    from cnnsearch.train.result import TrialControl

    torch.set_num_threads(1)
    import_lightning()
    x = torch.randint(0, 256, (256, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    y = torch.arange(256) % 2
    data = DeviceData(train_x=x, train_y=y, val_x=x[:64], val_y=y[:64], mean=torch.zeros(3), std=torch.ones(3), class_names=("a", "b"))
    arch = Architecture(
        layers=(ConvLayer(16, 3), ConvLayer(16, 3)),
        head=Head("gap", (), 0.0),
        train=TrainSettings(optimizer="adamw", lr=0.01, batch_size=256, epochs=1),
        augment=AugmentSettings(),
    )
    torch.manual_seed(1)
    given = build_model(arch, (3, 64, 64), 2)
    start = copy.deepcopy(given.state_dict())

    def train(net=None, micro_batch=None):
        control = TrialControl(seed=0, measure_latency=False, plan=DevicePlan(micro_batch=micro_batch))
        return train_candidate(arch, data, net=net, control=control)

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    mapped = int(next(line for line in open("/proc/self/status") if line.startswith("VmSize")).split()[1]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (mapped + 200 * 2**20, hard))
    built, tuned = train(), train(net=given)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    fresh = build_model(arch, (3, 64, 64), 2)
    fresh.load_state_dict(start)
    forced, forced_tuned = train(micro_batch=built.micro_batch), train(net=fresh, micro_batch=tuned.micro_batch)

    def same(a, b):
        return all(torch.equal(value, b.model.state_dict()[key]) for key, value in a.model.state_dict().items())

    for result in (built, tuned, forced, forced_tuned):
        print(result.outcome, result.micro_batch)
    print(same(built, forced), same(tuned, forced_tuned))
    """
)


def test_a_retry_after_a_real_oom_trains_what_a_forced_micro_batch_trains() -> None:
    done = _python(RETRY_EQUALS_A_FORCED_MICRO_BATCH)
    assert done.returncode == 0, done.stderr[-2000:]
    *results, verdict = done.stdout.splitlines()
    outcomes = [line.split() for line in results]
    assert [outcome for outcome, _ in outcomes] == ["complete"] * 4, done.stdout
    built, tuned, forced, forced_tuned = (int(micro) for _, micro in outcomes)
    assert 1 <= built < 256 and 1 <= tuned < 256, done.stdout  # the limit made the full batch fail
    assert (forced, forced_tuned) == (built, tuned)
    assert verdict == "True True", "the retry must start again from the same weights and random state"
