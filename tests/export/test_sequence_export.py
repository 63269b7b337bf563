"""A pool-first and a pool-pool architecture, written as JSON by hand, go through everything
downstream on the sequence space: `--enqueue` accepts them, they train on digits, `show` draws
their layers, `export` writes ONNX and TorchScript files whose outputs match the PyTorch
network, predict and rerun work, and fine-tuning with frozen features keeps the residual
block's weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import load_study, run_cli
from PIL import Image

from cnnsearch.data.load import load_dataset_cached
from cnnsearch.export.finetune import finetune_model
from cnnsearch.export.model_files import load_exported
from cnnsearch.export.rerun import rerun_trial
from cnnsearch.predict import predict_paths
from cnnsearch.run.folder import RunDir
from cnnsearch.spec import (
    Architecture,
    AugmentSettings,
    ConvLayer,
    Head,
    PoolLayer,
    ResidualLayer,
    SeparableLayer,
    TrainSettings,
)

TRAIN = TrainSettings(lr=0.01, weight_decay=1e-4, batch_size=64, epochs=1)
ARCHS = {
    "pool-first": Architecture(
        layers=(PoolLayer("max"), ConvLayer(16, 3), ResidualLayer(32, 3, stride=2)),
        head=Head(dense=(128, 64)),
        train=TRAIN,
    ),
    "pool-pool": Architecture(
        layers=(ConvLayer(32, 3), PoolLayer("avg"), PoolLayer("max"), SeparableLayer(64, 3, activation="silu")),
        head=Head(dense=(64,), dropout=0.1),
        train=TRAIN,
        augment=AugmentSettings(translate=1),
    ),
}


@pytest.fixture(scope="module")
def enqueued_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A real two-trial search of the sequence space on digits whose two trials are the JSON files."""
    folder = tmp_path_factory.mktemp("seq")
    files = []
    for name, arch in ARCHS.items():
        path = folder / f"{name}.json"
        path.write_text(arch.to_json(indent=2))
        files += ["--enqueue", str(path)]
    runs = folder / "runs"
    result = run_cli(
        "search",
        "--space",
        "sequence",
        "--data",
        "digits",
        "--name",
        "seq",
        "--trials",
        "2",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--runs-dir",
        str(runs),
        *files,
    )
    assert result.returncode == 0, result.stderr
    return runs, result.stderr


def test_enqueue_accepts_pool_first_and_pool_pool_and_trains_them(enqueued_run: tuple[Path, str]) -> None:
    runs, stderr = enqueued_run
    assert "queued 2 known candidates to train first" in stderr
    assert "do not fit this space" not in stderr
    trials = load_study(runs, "seq").trials
    assert [trial.state.name for trial in trials] == ["COMPLETE", "COMPLETE"]
    trained = [Architecture.from_dict(trial.user_attrs["arch"]) for trial in trials]
    assert trained == list(ARCHS.values())
    assert all(trial.user_attrs["best_val_acc"] > 0.1 for trial in trials)  # above chance after 1 epoch
    assert trials[0].params["layer1.kind"] == "pool" and trials[1].params["layer3.kind"] == "pool"


def test_show_draws_the_blocks(enqueued_run: tuple[Path, str]) -> None:
    runs, _ = enqueued_run
    result = run_cli("show", "seq", "0", "--runs-dir", str(runs))
    assert result.returncode == 0, result.stderr
    assert "mp2-c16k3-r32k3s2-gap-fc128-fc64" in result.stdout
    assert "residual 2 x 3x3, 32 filters, stride 2, 1x1 projection" in result.stdout


def test_rerun_reproduces_a_sequence_trial(enqueued_run: tuple[Path, str]) -> None:
    runs, _ = enqueued_run
    result = rerun_trial(RunDir(runs, "seq"), 1, device="cpu")
    assert result.reproduced is not None and abs(result.reproduced - result.recorded) <= 0.02


@pytest.mark.parametrize("trial", [0, 1], ids=list(ARCHS))
def test_export_writes_onnx_and_torchscript_that_match(
    enqueued_run: tuple[Path, str], trial: int, tmp_path: Path
) -> None:
    runs, _ = enqueued_run
    out = tmp_path / "model"
    # The first retrains (on train+validation), the second keeps the search's weights.
    retrain = ["--retrain-epochs", "1"] if trial == 0 else ["--no-retrain"]
    result = run_cli(
        "export", "seq", "--trial", str(trial), "--out", str(out), *retrain, "--device", "cpu", "--runs-dir", str(runs)
    )
    assert result.returncode == 0, result.stderr
    exported = load_exported(out)
    assert exported.arch == list(ARCHS.values())[trial].with_epochs(1)
    meta = json.loads((out / "model.json").read_text())
    assert set(meta["verification"]) == {"onnx", "torchscript", "pt"}

    digits = load_dataset_cached("digits")
    mean = torch.tensor(meta["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(meta["std"]).view(1, -1, 1, 1)
    x = (digits.test_images[:64].float() / 255.0 - mean) / std
    with torch.no_grad():
        expected = exported.net.eval()(x).numpy()
        scripted = torch.jit.load(str(out / "model.ts"))(x).numpy()
    import onnxruntime

    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert np.isfinite(expected).all()
    assert np.abs(onnx_out - expected).max() < 1e-4
    assert np.abs(scripted - expected).max() < 1e-4

    # predict gives the same classes with either runtime.
    pngs = []
    for index in range(6):
        pngs.append(tmp_path / f"{index}.png")
        Image.fromarray(digits.test_images[index, 0].numpy(), mode="L").save(pngs[-1])
    by_torch = [p.class_index for p in predict_paths(out, pngs, runtime="torch")]
    assert by_torch == [p.class_index for p in predict_paths(out, pngs, runtime="onnx")]
    assert by_torch == expected[:6].argmax(1).tolist()

    if trial == 0:  # the residual block: fine-tuning with frozen features keeps its weights and statistics
        tuned = tmp_path / "tuned"
        finetune_model(out, data="digits", out=tuned, epochs=1, freeze=True, lr=0.05, device="cpu")
        before, after = exported.net.features.state_dict(), load_exported(tuned).net.features.state_dict()
        assert any(".shortcut." in key for key in before)
        for key, value in before.items():
            assert torch.equal(value, after[key]), key
