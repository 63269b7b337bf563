"""The device plan: the CPU's defaults stay plain float32, CNNSEARCH_DEVICE_PLAN forces the GPU's
choices (checked before anything trains), and a whole search and export run under them on the CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cnnsearch.errors import UserError
from cnnsearch.outcomes import TrialRecord
from cnnsearch.train.loop import resolve_device
from cnnsearch.train.plan import (
    FAST_BF16,
    FLOAT32,
    PLAN_ENV,
    DevicePlan,
    cpu_has_bf16_matrix_units,
    default_plan,
    parse_plan,
    plan_for,
)

REPO = Path(__file__).resolve().parents[2]


def test_the_cpu_trains_in_bf16_only_with_amx_and_always_whole_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PLAN_ENV, raising=False)
    cpu = torch.device("cpu")
    # torch's private probe, pinned: if it moves, the CPU default silently falls back to float32.
    assert callable(torch.cpu._is_amx_tile_supported)
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").is_file() else None
    amx = cpu_has_bf16_matrix_units()
    if flags is not None and amx:  # torch's yes is the kernel's too (the kernel may list AMX and
        assert "amx_tile" in flags and "amx_bf16" in flags  # refuse a process its use: then torch says no)
    assert default_plan(cpu) == plan_for(cpu) == (FAST_BF16 if amx else FLOAT32)
    assert FAST_BF16.label() == "channels-last, bf16 autocast" and FLOAT32.label() == "float32"
    assert DevicePlan(channels_last=False, autocast="off", micro_batch=None) == FLOAT32
    assert FLOAT32.first_micro_batch(128) == FAST_BF16.first_micro_batch(128) == 128
    forced = DevicePlan(channels_last=True)
    assert plan_for(cpu, forced) is forced  # a caller's plan wins over the environment
    monkeypatch.setenv(PLAN_ENV, "channels_last=off,autocast=off")
    assert plan_for(cpu) == FLOAT32  # and the environment can turn the CPU default off


def test_the_environment_forces_the_gpu_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PLAN_ENV, "channels_last=on, autocast=bf16,micro_batch=16")
    plan = plan_for(torch.device("cpu"))
    assert plan == DevicePlan(channels_last=True, autocast="bf16", micro_batch=16)
    assert plan.first_micro_batch(64) == 16 and plan.first_micro_batch(8) == 8
    assert parse_plan("autocast=off", DevicePlan(channels_last=True, autocast="bf16")) == DevicePlan(channels_last=True)
    layer, x = torch.nn.Linear(4, 2), torch.ones(1, 4)
    with plan.autocast_context(torch.device("cpu")):
        assert layer(x).dtype == torch.bfloat16
    with FLOAT32.autocast_context(torch.device("cpu")):
        assert layer(x).dtype == torch.float32


def test_a_bad_plan_stops_the_command_before_anything_trains(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PLAN_ENV, "channels_last=maybe,micro_batch=0,fp16")
    with pytest.raises(UserError) as caught:
        resolve_device("cpu")
    assert str(caught.value) == (
        "CNNSEARCH_DEVICE_PLAN: channels_last='maybe' should be on or off; micro_batch='0' should be a whole "
        "number >= 1; unknown setting 'fp16' (known: channels_last, autocast, micro_batch); fix or unset it"
    )
    with pytest.raises(ValueError, match="micro_batch >= 1 must hold, but got micro_batch=0"):
        DevicePlan(micro_batch=0)


def test_a_search_and_its_export_run_under_the_gpu_plan_on_the_cpu(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from cnnsearch.export.model_files import load_exported
    from cnnsearch.export.retrain import export_run
    from cnnsearch.search.settings import SearchSettings
    from cnnsearch.search.setup import prepare_run
    from cnnsearch.search.worker import WorkerLoop

    monkeypatch.setenv(PLAN_ENV, "channels_last=on,autocast=bf16,micro_batch=16")
    settings = SearchSettings(
        name="gpuplan",
        space=str(REPO / "search_spaces" / "tiny.toml"),
        data="digits",
        runs_dir=str(tmp_path / "runs"),
        trials=1,
        epochs=1,
        seed=0,
        device="cpu",
        pruner="none",
    )
    run, info, space = prepare_run(settings)
    WorkerLoop(run, info, space, target=1, device="cpu").run_loop()
    (trial,) = run.load_study().get_trials()
    record = TrialRecord.of(trial)
    assert record.outcome == "complete"
    assert record.micro_batch == 16  # batch 32 in two accumulated micro-batches

    # The retrain trains channels-last too; the files must still hold plain layouts and verify.
    result = export_run(run, out=tmp_path / "model", device="cpu", formats=("pt", "torchscript", "onnx"))
    assert result.test_accuracy > 0.3  # chance is 0.1 after one epoch
    assert set(result.verification) == {"pt", "torchscript", "onnx"}
    exported = load_exported(tmp_path / "model")
    assert all(parameter.is_contiguous() for parameter in exported.net.parameters())
    assert json.loads((tmp_path / "model" / "model.json").read_text())["test_accuracy"] == result.test_accuracy
