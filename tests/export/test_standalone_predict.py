"""The export folder's own predict.py: copied verbatim from cnnsearch/export/standalone_predict.py,
the same answers as `cnnsearch predict`, and runnable in a venv that holds only numpy, pillow
and onnxruntime (no torch, no cnnsearch).

One tiny real search and export (CLI, digits, CPU) are shared by the module; the torch-free
venv is made once with pip, which here installs from a local index and cache.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, cli_env, run_cli
from PIL import Image

from cnnsearch.errors import UserError
from cnnsearch.predict import require_module

TEMPLATE = ROOT / "cnnsearch" / "export" / "standalone_predict.py"
DIGITS = 6  # 8x8 digit images classified by both tools
PIP_TIMEOUT = 120  # seconds for `pip install numpy pillow onnxruntime` before the venv test is skipped


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 2-trial, 1-epoch search on digits, exported (all formats) by the CLI."""
    runs = tmp_path_factory.mktemp("runs")
    searched = run_cli(
        *("search", "--space", "tiny", "--data", "digits", "--trials", "2", "--epochs", "1"),
        *("--device", "cpu", "--name", "p", "--runs-dir", str(runs)),
    )
    assert searched.returncode == 0, searched.stderr
    out = runs / "model"
    exported = run_cli(
        *("export", "p", "--out", str(out), "--retrain-epochs", "1", "--device", "cpu", "--runs-dir", str(runs))
    )
    assert exported.returncode == 0, exported.stderr
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of digits PNGs (8x8 L, as the dataset scales them), one nested in a subfolder, plus
    images the preprocessing must convert and resize: RGB 20x12 and 16-bit grayscale 16x16."""
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("images")
    (folder / "sub").mkdir()
    digits = np.rint(load_digits().images[:DIGITS] * (255.0 / 16.0)).astype(np.uint8)
    for index, image in enumerate(digits):
        where = folder / "sub" if index == 0 else folder
        Image.fromarray(image, mode="L").save(where / f"digit_{index}.png")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8), mode="RGB").save(folder / "colour.png")
    Image.fromarray(rng.integers(0, 65536, (16, 16), dtype=np.uint16)).save(folder / "deep.png")  # I;16
    (folder / ".hidden").mkdir()
    Image.fromarray(digits[0], mode="L").save(folder / ".hidden" / "skipped.png")
    return folder


def run_script(python: str | Path, script: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(python), str(script), *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=cli_env()
    )


def csv_rows(text: str) -> list[tuple[str, str, float]]:
    reader = csv.reader(io.StringIO(text))
    assert next(reader) == ["path", "class", "probability"]
    return [(path, name, float(probability)) for path, name, probability in reader]


# --------------------------------------------------------------------------- the file


def test_export_writes_the_template_verbatim_and_lists_it(model_dir: Path) -> None:
    assert (model_dir / "predict.py").read_bytes() == TEMPLATE.read_bytes()
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["files"] == ["model.onnx", "model.ts", "model.pt", "predict.py", "model.json"]
    assert sorted(path.name for path in model_dir.iterdir()) == sorted(meta["files"])


def test_the_template_imports_only_the_standard_library_numpy_pillow_onnxruntime() -> None:
    tree = ast.parse(TEMPLATE.read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {
        node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    outside = imported - set(sys.stdlib_module_names) - {"__future__"}
    assert outside == {"numpy", "PIL", "onnxruntime"}


# --------------------------------------------------------------------------- the same answers


def test_predict_py_agrees_with_cnnsearch_predict_onnx(model_dir: Path, images: Path) -> None:
    # Two copies of the preprocessing (cnnsearch/predict.py and the template) held to one answer.
    ours = run_cli("predict", str(model_dir), str(images), "--runtime", "onnx", "--format", "csv")
    assert ours.returncode == 0, ours.stderr
    theirs = run_script(sys.executable, model_dir / "predict.py", str(images), "--format", "csv", cwd=ROOT)
    assert theirs.returncode == 0, theirs.stderr
    expected, got = csv_rows(ours.stdout), csv_rows(theirs.stdout)
    assert len(got) == DIGITS + 2  # the nested digit and the two converted images; the hidden one skipped
    assert [(path, name) for path, name, _ in got] == [(path, name) for path, name, _ in expected]
    assert np.allclose([p for *_, p in got], [p for *_, p in expected], rtol=0, atol=1e-5)
    assert all(0.0 < probability <= 1.0 for *_, probability in got)

    table = run_script(sys.executable, model_dir / "predict.py", str(images / "digit_1.png"), cwd=ROOT)
    header, row = table.stdout.splitlines()
    assert header.split() == ["path", "class", "probability"]
    by_path = {path: (name, probability) for path, name, probability in got}
    name, probability = by_path[str(images / "digit_1.png")]
    assert row.split() == [str(images / "digit_1.png"), name, f"{probability:.2%}"]
    assert len(header) == len(row)  # the probability column is right-aligned under its header


def test_predict_py_rejects_bad_input_in_one_line(model_dir: Path, images: Path, tmp_path: Path) -> None:
    script = model_dir / "predict.py"
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not an image")
    fake_png = tmp_path / "fake.png"
    fake_png.write_text("not an image either")
    no_onnx = tmp_path / "no_onnx"
    no_onnx.mkdir()
    for name in ("predict.py", "model.json"):
        shutil.copy(model_dir / name, no_onnx / name)
    suffixes = "png, jpg, jpeg, bmp, gif, webp"
    cases = [
        (
            script,
            tmp_path / "missing.png",
            f"{tmp_path / 'missing.png'} does not exist; pass image files or folders of images",
        ),
        (script, text_file, f"{text_file} is not an image predict.py can read ({suffixes})"),
        (script, fake_png, f"{fake_png} is not an image predict.py can read ({suffixes})"),
        (script, tmp_path / "no_onnx", f"folder {no_onnx} holds no images ({suffixes}); pass image files or folders"),
        (no_onnx / "predict.py", images, f"{no_onnx} has no model.onnx; export the model with --format onnx"),
    ]
    for path, argument, message in cases:
        done = run_script(sys.executable, path, str(argument), cwd=tmp_path)
        assert (done.returncode, done.stdout, done.stderr) == (2, "", f"predict.py: {message}\n"), argument


def test_force_replaces_or_removes_predict_py(model_dir: Path, tmp_path: Path) -> None:
    runs = model_dir.parent
    out = tmp_path / "model"
    shutil.copytree(model_dir, out)
    (out / "predict.py").write_text("an old script\n")
    (out / "notes.txt").write_text("the user's own file\n")
    common = ("--no-retrain", "--force", "--device", "cpu", "--runs-dir", str(runs))
    done = run_cli("export", "p", "--out", str(out), "--format", "onnx", *common)
    assert done.returncode == 0, done.stderr
    assert (out / "predict.py").read_bytes() == TEMPLATE.read_bytes()
    assert sorted(path.name for path in out.iterdir()) == ["model.json", "model.onnx", "notes.txt", "predict.py"]
    done = run_cli("export", "p", "--out", str(out), "--format", "pt", *common)
    assert done.returncode == 0, done.stderr
    assert sorted(path.name for path in out.iterdir()) == ["model.json", "model.pt", "notes.txt"]
    assert json.loads((out / "model.json").read_text())["files"] == ["model.pt", "model.json"]


# --------------------------------------------------------------------------- a torch-free venv


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a new venv holding only numpy, pillow and onnxruntime (and what they need)."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=120)
    started = time.monotonic()
    try:
        installed = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--quiet", "numpy", "pillow", "onnxruntime"],
            capture_output=True,
            text=True,
            timeout=PIP_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"pip install numpy pillow onnxruntime took over {PIP_TIMEOUT} s")
    if installed.returncode != 0:
        lines = installed.stderr.strip().splitlines() or ["no message"]
        pytest.skip(
            f"pip install numpy pillow onnxruntime failed after {time.monotonic() - started:.0f} s: {lines[-1]}"
        )
    return venv / "bin" / "python"


def test_predict_py_runs_without_torch_or_cnnsearch(
    model_dir: Path, images: Path, bare_python: Path, tmp_path: Path
) -> None:
    for module in ("torch", "cnnsearch"):
        done = subprocess.run(
            [str(bare_python), "-c", f"import {module}"], capture_output=True, text=True, cwd=tmp_path
        )
        assert done.returncode == 1 and f"No module named '{module}'" in done.stderr, module

    helped = run_script(bare_python, model_dir / "predict.py", "--help", cwd=tmp_path)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: predict.py"), helped.stderr

    digits = sorted(str(path) for path in images.rglob("digit_*.png"))
    done = run_script(bare_python, model_dir / "predict.py", *digits, "--format", "csv", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    reference = run_cli("predict", str(model_dir), *digits, "--runtime", "torch", "--format", "csv")
    assert reference.returncode == 0, reference.stderr
    got, expected = csv_rows(done.stdout), csv_rows(reference.stdout)
    assert [(path, name) for path, name, _ in got] == [(path, name) for path, name, _ in expected]
    assert np.allclose([p for *_, p in got], [p for *_, p in expected], rtol=0, atol=1e-4)  # onnx vs torch


# --------------------------------------------------------------------------- cnnsearch predict's runtimes


def test_a_missing_runtime_is_one_sentence() -> None:
    with pytest.raises(UserError) as caught:
        require_module("cnnsearch_no_such_runtime", needed_by="--runtime onnx", fix="pip install it")
    assert str(caught.value) == "--runtime onnx needs cnnsearch_no_such_runtime, which is not installed; pip install it"
    with pytest.raises(UserError):
        require_module("cnnsearch_no_such_runtime.sub", needed_by="x", fix="y")  # a dotted name, parent missing
    require_module("numpy", needed_by="x", fix="y")  # installed: nothing happens
