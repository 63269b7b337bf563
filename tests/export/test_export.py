"""Tests for cnnsearch.export and cnnsearch.predict on a tiny real search (digits, CPU).

One search of two 2-epoch trials and one export are shared by the module; every other test
retrains at most a few epochs. Thresholds are loose (above chance); messages are exact.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import textwrap
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console

from cnnsearch.data.dataset import dataset_fingerprint
from cnnsearch.data.load import load_dataset_cached, load_run_dataset
from cnnsearch.errors import UserError
from cnnsearch.export.finetune import finetune_model
from cnnsearch.export.model_files import load_exported
from cnnsearch.export.rerun import rerun_trial
from cnnsearch.export.retrain import export_run
from cnnsearch.model.build import build_model
from cnnsearch.predict import predict_paths, predictions_table, predictions_text
from cnnsearch.run.folder import RunDir
from cnnsearch.spec import Architecture

REPO = Path(__file__).resolve().parents[2]
MODEL_JSON_KEYS = {
    "architecture",
    "compact",
    "class_names",
    "input_shape",
    "mean",
    "std",
    "input",
    "test_accuracy",
    "test_size",
    "val_accuracy",
    "run",
    "trial",
    "retrain_epochs",
    "seed",
    "files",
    "versions",
    "created",
    "verification",
}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def search_run(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    """A real two-trial search on digits: trains once for the whole module."""
    from cnnsearch.search.settings import SearchSettings
    from cnnsearch.search.setup import prepare_run
    from cnnsearch.search.worker import WorkerLoop

    runs_dir = tmp_path_factory.mktemp("runs")
    settings = SearchSettings(
        name="t",
        space=str(REPO / "search_spaces" / "tiny.toml"),
        data="digits",
        runs_dir=str(runs_dir),
        trials=2,
        epochs=2,
        seed=0,
        device="cpu",
        pruner="none",
    )
    run, info, space = prepare_run(settings)
    WorkerLoop(run, info, space, target=2, device="cpu").run_loop()
    return run


@pytest.fixture(scope="module")
def exported(search_run: RunDir, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("export") / "model"
    messages: list[str] = []
    result = export_run(search_run, out=out, device="cpu", on_message=messages.append)
    return out, result, messages


@pytest.fixture(scope="module")
def digits():
    return load_dataset_cached("digits")


@pytest.fixture(scope="module")
def test_pngs(digits, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The first 40 digits test images as 8x8 grayscale PNG files."""
    folder = tmp_path_factory.mktemp("pngs")
    paths = []
    for index in range(40):
        path = folder / f"img_{index:03d}.png"
        Image.fromarray(digits.test_images[index, 0].numpy(), mode="L").save(path)
        paths.append(path)
    return paths


def reference_normalise(images: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """The documented preprocessing, written out plainly: (x/255 - mean)/std."""
    mean_t = torch.tensor(mean).view(1, -1, 1, 1)
    std_t = torch.tensor(std).view(1, -1, 1, 1)
    return (images.float() / 255.0 - mean_t) / std_t


def net_from_pt(path: Path):
    payload = torch.load(path, weights_only=True)
    arch = Architecture.from_dict(payload["architecture"])
    net = build_model(arch, tuple(payload["input_shape"]), len(payload["class_names"]))
    net.load_state_dict(payload["state_dict"])
    return net.eval(), payload


# --------------------------------------------------------------------------- export


def test_export_writes_verified_files(exported, search_run: RunDir, digits) -> None:
    out, result, messages = exported
    for name in ("model.pt", "model.ts", "model.onnx", "model.json"):
        assert (out / name).is_file(), name
    assert result.files == [
        out / "model.onnx",
        out / "model.ts",
        out / "model.pt",
        out / "predict.py",
        out / "model.json",
    ]

    net, payload = net_from_pt(out / "model.pt")
    assert payload["class_names"] == [str(i) for i in range(10)]
    assert payload["input_shape"] == [1, 8, 8]
    images = digits.test_images[:64]
    x = reference_normalise(images, payload["mean"], payload["std"])
    with torch.no_grad():
        expected = net(x).numpy()
    assert np.isfinite(expected).all()

    import onnxruntime

    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert np.abs(onnx_out - expected).max() < 1e-4
    scripted = torch.jit.load(str(out / "model.ts"))
    with torch.no_grad():
        assert np.abs(scripted(x).numpy() - expected).max() < 1e-4
        # the batch axis is dynamic in both files
        assert scripted(x[:3]).shape == (3, 10)
    assert session.run(None, {session.get_inputs()[0].name: x[:3].numpy()})[0].shape == (3, 10)

    meta = json.loads((out / "model.json").read_text())
    assert meta.keys() >= MODEL_JSON_KEYS
    assert meta["input"] == "float32 NCHW normalised as (x/255 - mean)/std"
    assert meta["run"] == "t" and meta["trial"] == result.trial
    assert meta["test_size"] == len(digits.test_labels) == 360
    assert meta["test_accuracy"] > 0.5  # chance is 0.1
    assert meta["files"] == ["model.onnx", "model.ts", "model.pt", "predict.py", "model.json"]
    assert set(meta["verification"]) == {"onnx", "torchscript", "pt"}
    assert all(diff < 1e-3 for diff in meta["verification"].values())
    assert set(meta["versions"]) >= {"cnnsearch", "torch", "onnx", "onnxruntime"}
    assert Architecture.from_dict(meta["architecture"]).compact() == meta["compact"]

    # The recorded test accuracy is that of exactly these weights.
    full = reference_normalise(digits.test_images, payload["mean"], payload["std"])
    with torch.no_grad():
        accuracy = (net(full).argmax(1) == digits.test_labels).float().mean().item()
    assert accuracy == pytest.approx(meta["test_accuracy"], abs=1e-6)

    # "best" is the COMPLETE trial with the highest validation accuracy.
    study = search_run.load_study()
    best = max(study.get_trials(), key=lambda t: (t.user_attrs["best_val_acc"], -t.number))
    assert result.trial == best.number
    # The final training is longer than the search's: 3x its epochs by default.
    assert meta["retrain_epochs"] == 3 * best.user_attrs["epochs_run"] == 6
    assert meta["final_schedule"] == "3x the search's 2 epochs" and meta["search_epochs"] == 2
    assert meta["val_accuracy"] == best.user_attrs["best_val_acc"], "the search's figure beside the final one"

    records = json.loads((search_run.path / "exports.json").read_text())
    mine = [record for record in records if record["out"] == str(out.resolve())]
    assert len(mine) == 1 and mine[0]["test_accuracy"] == meta["test_accuracy"]

    lines = result.summary_lines()
    assert lines[0] == f"chose {meta['chosen_because']}" and lines[0].startswith(f"chose trial {result.trial}: ")
    assert lines[1] == f"trial {result.trial} {meta['compact']}"
    assert (
        f"search validation accuracy {meta['val_accuracy']:.2%} -> final test accuracy {meta['test_accuracy']:.2%} "
        "on 360 images (evaluated once)"
    ) in lines
    assert (
        f"final training: 6 epochs (3x the search's 2 epochs) on train+validation (1437 images), seed {result.seed}"
        in lines
    )
    assert any(line.startswith("onnx: max |diff| ") for line in lines)
    assert any("evaluated once" in message for message in messages)


def test_export_refuses_a_used_folder_and_force_replaces_old_files(search_run: RunDir, tmp_path: Path) -> None:
    out = tmp_path / "model"
    out.mkdir()
    (out / "model.onnx").write_text("an old export")
    (out / "model.ts").write_text("an old export")
    (out / "notes.txt").write_text("the user's own file")
    with pytest.raises(UserError) as caught:
        export_run(search_run, out=out, device="cpu")
    assert str(caught.value) == f"{out} exists and is not empty; pass --force to overwrite it or choose another --out"

    # --force with --no-retrain: the search's weights, only the pt format. A killed export's temp
    # files go too (they piled up before); the user's own hidden files stay.
    (out / ".model.pt.k1ll3d.tmp").write_bytes(b"half a model")
    (out / ".notes.swp").write_text("the user's own")
    result = export_run(search_run, out=out, formats=("pt",), no_retrain=True, force=True, device="cpu")
    assert sorted(path.name for path in out.iterdir()) == [".notes.swp", "model.json", "model.pt", "notes.txt"]
    meta = json.loads((out / "model.json").read_text())
    assert meta["retrained"] is False and meta["retrain_epochs"] is None and result.retrain_epochs is None
    saved = torch.load(search_run.weights_file(result.trial), weights_only=True)["state_dict"]
    _, payload = net_from_pt(out / "model.pt")
    assert saved.keys() == payload["state_dict"].keys()
    assert all(torch.equal(saved[key], payload["state_dict"][key]) for key in saved)
    assert meta["test_accuracy"] > 0.3  # 2 epochs on the train split only
    assert result.summary_lines()[2].startswith("the search's weights, not retrained")


def test_export_rejects_bad_arguments_before_writing(search_run: RunDir, tmp_path: Path) -> None:
    out = tmp_path / "model"
    with pytest.raises(UserError) as caught:
        export_run(search_run, out=out, trial="7", device="cpu")
    assert str(caught.value) == "run 't' has no trial 7; trials are numbered 0..1"
    with pytest.raises(UserError) as caught:
        export_run(search_run, out=out, trial="abc", device="cpu")
    assert str(caught.value) == "--trial 'abc' is not valid; use best or a trial number such as 0"
    with pytest.raises(UserError) as caught:
        export_run(search_run, out=out, formats=("onnx", "tflite"), device="cpu")
    assert str(caught.value) == "unknown format 'tflite'; valid formats: onnx, torchscript, pt (comma-separated)"
    with pytest.raises(UserError, match="no run named 'nope'"):
        export_run(RunDir(search_run.runs_dir, "nope"), out=out, device="cpu")
    with pytest.raises(UserError, match="--top chooses among the best trials"):
        export_run(search_run, out=out, trial="1", top=2, device="cpu")
    for option, flag in (("top", "--top"), ("seeds", "--seeds"), ("retrain_epochs", "--final-epochs")):
        with pytest.raises(UserError) as caught:
            export_run(search_run, out=out, device="cpu", **{option: 0})
        assert str(caught.value) == f"{flag} must be at least 1, but got 0"
    assert not out.exists()


def test_export_refuses_a_trial_without_a_final_result(search_run: RunDir, tmp_path: Path) -> None:
    import optuna

    runs_dir = tmp_path / "runs"
    shutil.copytree(search_run.path, runs_dir / "t")
    copy = RunDir(runs_dir, "t")
    study = copy.load_study()
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL,
            user_attrs={**study.trials[0].user_attrs, "outcome": "interrupted", "reason": "interrupted by the user"},
        )
    )
    with pytest.raises(UserError) as caught:
        export_run(copy, out=tmp_path / "model", trial="2", device="cpu")
    assert str(caught.value) == (
        "trial 2 of run 't' was interrupted (interrupted by the user), so it has no final result; "
        "choose a complete or timed-out trial (see cnnsearch leaderboard t)"
    )


def test_export_refuses_data_that_changed_since_the_search(search_run: RunDir, tmp_path: Path) -> None:
    info = search_run.read_info()
    info.data_fingerprint = dataset_fingerprint(load_dataset_cached("digits"))
    assert load_run_dataset(info, consequence="unused").num_classes == 10  # the same data passes
    original = search_run.run_file.read_bytes()
    info.data_fingerprint = "0123456789abcdef"  # what a different digits would have given
    search_run.write_info(info)
    try:
        with pytest.raises(UserError) as caught:
            export_run(search_run, out=tmp_path / "model", device="cpu")
        assert str(caught.value) == (
            "the data of run 't' (digits) changed since the search started; "
            "export would test on images the search may have seen; restore the data, or start a new run on the new data"
        )
        with pytest.raises(UserError, match="the saved split would pick other images than the search trained on"):
            rerun_trial(search_run, 0, device="cpu")
    finally:
        search_run.run_file.write_bytes(original)
    assert not (tmp_path / "model").exists()


def test_no_retrain_needs_saved_weights(search_run: RunDir, tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    shutil.copytree(search_run.path, runs_dir / "t")
    copy = RunDir(runs_dir, "t")
    copy.weights_file(0).unlink()
    with pytest.raises(UserError) as caught:
        export_run(copy, out=tmp_path / "model", trial="0", no_retrain=True, device="cpu")
    assert str(caught.value) == (
        "trial 0 of run 't' has no saved weights (the search keeps those of the best 3 trials only); "
        "drop --no-retrain to retrain it"
    )
    assert not (tmp_path / "model").exists()


def test_damaged_weights_are_one_sentence_or_retrained_never_a_traceback(search_run: RunDir, tmp_path: Path) -> None:
    """Weights are written without fsync: a power cut can leave an empty file. torch.load raised
    EOFError (or UnpicklingError for garbage), which came out as a traceback; and a short-budget
    `search --export` picked the file on is_file() alone and crashed instead of retraining."""
    runs_dir = tmp_path / "runs"
    shutil.copytree(search_run.path, runs_dir / "t")
    copy = RunDir(runs_dir, "t")
    theirs = io.BytesIO()  # another network's, left under a trial number given out again
    torch.save({**torch.load(copy.weights_file(0), weights_only=True), "network": "another"}, theirs)
    trial = next(t for t in copy.load_study().trials if t.number == 0)
    assert torch.load(copy.weights_file(0), weights_only=True)["network"] == trial.user_attrs["hash"]
    for damage in (b"", b"not a checkpoint at all", theirs.getvalue()):
        copy.weights_file(0).write_bytes(damage)
        with pytest.raises(UserError, match="does not hold the weights of trial 0"):
            export_run(copy, out=tmp_path / "model", trial="0", no_retrain=True, device="cpu")
        assert not (tmp_path / "model").exists()
    messages: list[str] = []  # too little time for the search's epochs: weights if they load, else a retrain
    result = export_run(
        copy,
        out=tmp_path / "short",
        trial="0",
        final_budget_s=0.01,
        weights_when_short=True,
        formats=("pt",),
        device="cpu",
        on_message=messages.append,
    )
    assert result.retrain_epochs is not None and not any("exporting the search's weights" in m for m in messages)


def test_a_final_training_that_diverges_is_one_sentence_or_the_kept_weights(search_run: RunDir, tmp_path: Path) -> None:
    """Before: a final training ending nan (or oom) raised a RuntimeError, a traceback, and under
    `search --export` nothing was exported after the whole search although weights were kept."""
    from dataclasses import replace

    import optuna

    from cnnsearch.model.build import build_model
    from cnnsearch.spec import Architecture

    runs_dir = tmp_path / "runs"
    shutil.copytree(search_run.path, runs_dir / "t")
    copy = RunDir(runs_dir, "t")
    study = copy.load_study()
    best = max((t for t in study.trials if t.value is not None), key=lambda t: t.value)
    arch = Architecture.from_dict(best.user_attrs["arch"])
    wild = replace(arch, train=replace(arch.train, lr=1e6, schedule="constant"))  # diverges at once
    attrs = {**best.user_attrs, "arch": wild.to_dict(), "hash": wild.canonical_hash(), "best_val_acc": 0.999}
    study.add_trial(
        optuna.trial.create_trial(
            value=0.999, params=best.params, distributions=best.distributions, user_attrs=attrs,
            intermediate_values={1: 0.999},
        )
    )  # fmt: skip
    number = len(study.trials) - 1
    net = build_model(wild, (1, 8, 8), 10)  # its kept weights, as a search writes them
    torch.save(
        {"state_dict": net.state_dict(), "epoch": 1, "network": wild.canonical_hash()}, copy.weights_file(number)
    )
    with pytest.raises(UserError, match=f"the final training of trial {number} ended nan"):
        export_run(copy, out=tmp_path / "model", retrain_epochs=2, formats=("pt",), device="cpu")
    assert not (tmp_path / "model").exists()
    messages: list[str] = []
    result = export_run(
        copy, out=tmp_path / "kept", final_budget_s=120, weights_when_short=True, formats=("pt",), device="cpu",
        on_message=messages.append,
    )  # fmt: skip
    assert result.trial == number and result.retrain_epochs is None, messages
    assert any(f"exporting the search's weights of trial {number} instead" in m for m in messages), messages
    assert json.loads((tmp_path / "kept" / "model.json").read_text())["retrained"] is False


def test_a_full_disk_under_the_model_folder_is_one_line(search_run: RunDir, tmp_path: Path) -> None:
    """torch.save, torch.jit.save and the ONNX writers raise RuntimeError on a full disk, not an
    OSError with its errno: before, a traceback instead of the one-line disk-full message."""
    from conftest import run_cli
    from faults import assert_one_line_error, fill, small_tmpfs

    runs_dir = tmp_path / "runs"
    shutil.copytree(search_run.path, runs_dir / "t")
    with small_tmpfs(tmp_path / "disk") as disk:
        fill(disk, leave=8 * 1024)  # room for a folder, not for the model
        out = disk / "model"
        result = run_cli(
            "export", "t", "--out", str(out), "--no-retrain", "--format", "pt", "--runs-dir", str(runs_dir)
        )
        message = f"no space left on {disk} while saving the pt model in {out}; free space and run the command again"
        assert_one_line_error(result, message, 1, alone=False)
        assert not (out / "model.json").exists() and not [p for p in out.glob("*") if p.name != "fill"]


def test_top_confirms_the_choice_on_validation(search_run: RunDir, tmp_path: Path) -> None:
    messages: list[str] = []
    result = export_run(
        search_run,
        out=tmp_path / "model",
        top=2,
        seeds=1,
        retrain_epochs=1,
        formats=("pt",),
        device="cpu",
        on_message=messages.append,
    )
    assert [len(row.accuracies) for row in result.confirmation] == [1, 1]
    assert sorted(row.trial for row in result.confirmation) == [0, 1]
    assert result.trial == result.confirmation[0].trial
    assert result.confirmation[0].mean >= result.confirmation[1].mean
    assert result.confirmation[0].seeds == [1000 + result.trial]  # fresh seeds, not the search's
    assert any(message == result.confirmation[0].line() for message in messages)
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert [row["trial"] for row in meta["confirmation"]] == [row.trial for row in result.confirmation]


def test_load_exported(exported, tmp_path: Path) -> None:
    out, result, _ = exported
    model = load_exported(out)
    assert not model.net.training
    assert model.input_shape == (1, 8, 8) and len(model.class_names) == 10
    assert model.meta["trial"] == result.trial
    with pytest.raises(UserError, match="does not exist"):
        load_exported(tmp_path / "missing")
    with pytest.raises(UserError, match="has no model.pt"):
        load_exported(tmp_path)


def test_predict_torch_falls_back_to_torchscript(exported, tmp_path: Path, test_pngs: list[Path]) -> None:
    out, _, _ = exported
    without_pt = tmp_path / "model"
    shutil.copytree(out, without_pt)
    (without_pt / "model.pt").unlink()
    expected = predict_paths(out, test_pngs[:8], runtime="torch")
    got = predict_paths(without_pt, test_pngs[:8], runtime="torch")
    assert [p.class_index for p in got] == [p.class_index for p in expected]
    assert [p.probability for p in got] == pytest.approx([p.probability for p in expected], abs=1e-5)


# --------------------------------------------------------------------------- predict


def test_predict_matches_the_pytorch_model(exported, digits, test_pngs: list[Path]) -> None:
    out, _, _ = exported
    net, payload = net_from_pt(out / "model.pt")
    with torch.no_grad():
        logits = net(reference_normalise(digits.test_images[:40], payload["mean"], payload["std"]))
    expected = logits.argmax(1).tolist()
    probabilities = torch.softmax(logits, 1).max(1).values.tolist()

    with_torch = predict_paths(out, test_pngs, runtime="torch")
    assert [p.class_index for p in with_torch] == expected
    assert [p.class_name for p in with_torch] == [str(i) for i in expected]
    assert [p.path for p in with_torch] == test_pngs
    assert [p.probability for p in with_torch] == pytest.approx(probabilities, abs=1e-5)

    # A folder is searched recursively and gives the same answers; so does onnxruntime.
    with_onnx = predict_paths(out, [test_pngs[0].parent], runtime="onnx")
    assert [p.class_index for p in with_onnx] == expected
    assert [p.probability for p in with_onnx] == pytest.approx(probabilities, abs=1e-5)


def test_predict_rejects_what_it_cannot_read(exported, tmp_path: Path, test_pngs: list[Path]) -> None:
    out, _, _ = exported
    text = tmp_path / "x.txt"
    text.write_text("not an image")
    with pytest.raises(UserError) as caught:
        predict_paths(out, [test_pngs[0], text])
    assert str(caught.value) == f"{text} is not an image cnnsearch can read (png, jpg, jpeg, bmp, gif, webp)"
    fake = tmp_path / "fake.png"
    fake.write_text("not an image either")
    with pytest.raises(UserError) as caught:
        predict_paths(out, [fake], runtime="onnx")
    assert str(caught.value) == f"{fake} is not an image cnnsearch can read (png, jpg, jpeg, bmp, gif, webp)"
    with pytest.raises(UserError) as caught:
        predict_paths(out, [tmp_path / "missing.png"])
    assert str(caught.value) == f"{tmp_path / 'missing.png'} does not exist; pass image files or folders of images"
    with pytest.raises(UserError) as caught:
        predict_paths(tmp_path, test_pngs)
    assert str(caught.value) == f"{tmp_path} has no model.json; pass a folder written by `cnnsearch export`"


def test_predict_resizes_and_converts_colour_images(exported, tmp_path: Path) -> None:
    out, _, _ = exported
    path = tmp_path / "big.jpg"
    Image.new("RGB", (32, 24), (200, 10, 10)).save(path)
    (prediction,) = predict_paths(out, [path])
    assert 0.0 < prediction.probability <= 1.0


def test_onnx_runtime_does_not_import_torch(exported, test_pngs: list[Path]) -> None:
    out, _, _ = exported
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from cnnsearch.predict import predict_paths
        predictions = predict_paths(Path({str(out)!r}), [Path({str(test_pngs[0])!r})], runtime="onnx")
        print(len(predictions), "torch" in sys.modules)
    """)
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert completed.stdout.split() == ["1", "False"]


def test_prediction_output_formats(exported, test_pngs: list[Path]) -> None:
    out, _, _ = exported
    predictions = predict_paths(out, test_pngs[:3])
    csv_text = predictions_text(predictions, "csv")
    assert csv_text.splitlines()[0] == "path,class,probability"
    assert csv_text.splitlines()[1].startswith(f"{test_pngs[0]},{predictions[0].class_name},")
    rows = json.loads(predictions_text(predictions, "json"))
    assert [row["class"] for row in rows] == [p.class_name for p in predictions]
    console = Console(file=StringIO(), width=200)
    console.print(predictions_table(predictions))
    rendered = console.file.getvalue()
    assert test_pngs[0].name in rendered and "probability" in rendered
    with pytest.raises(UserError):
        predictions_text(predictions, "yaml")


# --------------------------------------------------------------------------- fine-tune


@pytest.fixture(scope="module")
def three_class_folder(digits, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 digits each of 0, 1 and 2 as PNG files in class folders named zero, one, two."""
    root = tmp_path_factory.mktemp("folder")
    for label, name in enumerate(("zero", "one", "two")):
        (root / name).mkdir()
        images = digits.train_images[digits.train_labels == label][:30]
        for index, image in enumerate(images):
            Image.fromarray(image[0].numpy(), mode="L").save(root / name / f"{index:02d}.png")
    return root


def test_finetune_to_new_classes(exported, three_class_folder: Path, tmp_path: Path) -> None:
    out, _, _ = exported
    messages: list[str] = []
    result = finetune_model(
        out,
        data=f"folder:{three_class_folder}",
        out=tmp_path / "ft",
        epochs=3,
        seed=0,
        device="cpu",
        on_message=messages.append,
    )
    tuned = load_exported(tmp_path / "ft")
    assert tuned.class_names == ("one", "two", "zero")
    assert [m for m in tuned.net.head if isinstance(m, torch.nn.Linear)][-1].out_features == 3
    with torch.no_grad():
        assert tuned.net(torch.zeros(2, 1, 8, 8)).shape == (2, 3)
    source = load_exported(out)
    assert tuned.mean == source.mean and tuned.std == source.std  # the features' normalisation is kept
    meta = tuned.meta
    assert meta["finetuned_from"]["trial"] == source.meta["trial"]
    assert meta["test_size"] == result.test_size == 18  # a 20% held-out share of 90 images
    assert 0.0 <= meta["test_accuracy"] <= 1.0
    assert set(meta["verification"]) == {"onnx", "torchscript", "pt"}
    assert (tmp_path / "ft" / "model.onnx").is_file()
    assert result.summary_lines()[0].startswith(f"fine-tuned {out} on folder:")
    # 61 training images at the model's batch of 32 would be 1 step per epoch: the batch is lowered.
    assert source.arch.train.batch_size == 32 and meta["architecture"]["train"]["batch_size"] == 8
    assert any(
        re.search(
            r"3 epochs of 7 steps \(batch 8, lowered from the model's 32, which gives 1 step "
            r"per epoch\)",
            message,
        )
        for message in messages
    ), messages
    assert not any(message.startswith(("resized", "converted")) for message in messages)


def test_finetune_freeze_keeps_the_features(exported, three_class_folder: Path, tmp_path: Path) -> None:
    out, _, _ = exported
    finetune_model(
        out, data=f"folder:{three_class_folder}", out=tmp_path / "ft", epochs=2, freeze=True, lr=0.05, device="cpu"
    )
    before = load_exported(out).net
    after = load_exported(tmp_path / "ft").net
    # Weights and batch-norm statistics alike: frozen stages run in eval mode while the head trains.
    for key, value in before.features.state_dict().items():
        assert torch.equal(value, after.features.state_dict()[key]), key
    changed = [
        key
        for key, value in before.head.state_dict().items()
        if value.shape == after.head.state_dict()[key].shape and not torch.equal(value, after.head.state_dict()[key])
    ]
    classifier = [m for m in after.head if isinstance(m, torch.nn.Linear)][-1]
    assert classifier.out_features == 3
    if len(before.head.state_dict()) > 2:  # a hidden dense layer exists: it trains too
        assert changed


def test_finetune_converts_and_resizes_images_for_the_model(exported, digits, tmp_path: Path) -> None:
    """Mostly grayscale 16x16 images with one colour image per class, for a grayscale 8x8 model."""
    out, _, _ = exported
    for label, name in ((0, "zero"), (1, "one")):
        (tmp_path / "mixed" / name).mkdir(parents=True)
        images = digits.train_images[digits.train_labels == label][:12, 0].numpy()
        for index, image in enumerate(images):
            Image.fromarray(image, mode="L").resize((16, 16)).save(tmp_path / "mixed" / name / f"{index:02d}.png")
        Image.new("RGB", (16, 16), (200, 30, 90)).save(tmp_path / "mixed" / name / "colour.png")
    messages: list[str] = []
    data = f"folder:{tmp_path / 'mixed'}"
    result = finetune_model(out, data=data, out=tmp_path / "ft", epochs=1, device="cpu", on_message=messages.append)
    assert result.meta["input_shape"] == [1, 8, 8]
    assert (
        f"converted the colour images of {data} to grayscale with Pillow's luma weights "
        f"0.299 R + 0.587 G + 0.114 B, as the model takes 1-channel images"
    ) in messages
    assert "resized 16x16 images to the model's 8x8 input" in messages


# --------------------------------------------------------------------------- rerun


def test_rerun_reproduces_the_recorded_accuracy(search_run: RunDir) -> None:
    result = rerun_trial(search_run, 1, device="cpu")
    assert result.reproduced is not None
    assert abs(result.reproduced - result.recorded) <= 0.02
    assert result.summary().startswith(f"trial 1: recorded {result.recorded:.2%}, reproduced ")
    assert result.summary().endswith(" points)")
    with pytest.raises(UserError) as caught:
        rerun_trial(search_run, 9, device="cpu")
    assert str(caught.value) == "run 't' has no trial 9; trials are numbered 0..1"
