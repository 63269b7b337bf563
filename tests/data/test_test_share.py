"""The held-out test share of a source without an official test set is fixed per dataset: it
does not move with --seed, so no run, fork or --from-run ever trains on another run's test images.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from conftest import TINY_SPACE, run_cli
from PIL import Image

from cnnsearch.data.dataset import dataset_fingerprint
from cnnsearch.data.load import load_dataset, load_run_dataset
from cnnsearch.data.split import load_split
from cnnsearch.run.folder import RunDir


def image_hashes(images: torch.Tensor) -> set[str]:
    return {hashlib.sha256(image.numpy().tobytes()).hexdigest() for image in images}


def test_a_fork_with_another_seed_trains_on_no_test_image_and_old_seeded_runs_are_refused(runs_dir: Path) -> None:
    common = ("--space", str(TINY_SPACE), "--data", "digits", "--epochs", "1", "--runs-dir", str(runs_dir))
    first = run_cli("search", *common, "--name", "s0", "--seed", "0", "--trials", "1")
    assert first.returncode == 0, first.stderr
    fork = run_cli(
        "search", "--name", "s0", "--fork", "s1", "--seed", "1", "--trials", "1", "--runs-dir", str(runs_dir)
    )
    assert fork.returncode == 0, fork.stderr
    parent_info = RunDir(runs_dir, "s0").read_info()
    fork_run = RunDir(runs_dir, "s1")
    fork_info = fork_run.read_info()
    assert fork_info.split_seed == 1 and fork_info.data_fingerprint == parent_info.data_fingerprint
    parent_test = load_run_dataset(parent_info, consequence="-").test_images
    fork_data = load_run_dataset(fork_info, consequence="-")
    assert torch.equal(fork_data.test_images, parent_test)  # seed 0 and seed 1: one test share
    split = load_split(fork_run.split_file)
    trained_on = fork_data.train_images[torch.from_numpy(np.concatenate([split.train_indices, split.val_indices]))]
    assert not image_hashes(trained_on) & image_hashes(parent_test)
    assert not np.array_equal(split.val_indices, load_split(RunDir(runs_dir, "s0").split_file).val_indices)

    # A run made before the change: its recorded fingerprint is that of a test share drawn with its seed.
    raw = json.loads(fork_run.run_file.read_text())
    raw["data_fingerprint"] = dataset_fingerprint(load_dataset("digits", test_seed=1))
    fork_run.run_file.write_text(json.dumps(raw))
    before = sorted(p.name for p in fork_run.path.rglob("*"))
    resumed = run_cli("search", "--name", "s1", "--trials", "3", "--runs-dir", str(runs_dir))
    assert resumed.returncode == 2 and "Traceback" not in resumed.stderr
    assert resumed.stderr.strip().splitlines() == [
        "error: run 's1' was made before the test share of digits was fixed per dataset (its test share "
        "followed --seed 1, so other runs may have trained on it); start a new run on digits"
    ]
    exported = run_cli("export", "s1", "--out", str(runs_dir / "m"), "--runs-dir", str(runs_dir))
    assert exported.returncode == 2 and "was made before the test share" in exported.stderr
    assert not (runs_dir / "m").exists() and sorted(p.name for p in fork_run.path.rglob("*")) == before


def write_folder(root: Path, classes: dict[str, int], *, duplicate: bool = False) -> None:
    rng = np.random.default_rng(0)
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for index in range(count):
            pixels = rng.integers(0, 256, size=(8, 8), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index}.png")
    if duplicate:  # every image of class a twice: some copies land in the test share
        for path in sorted((root / "a").glob("*.png")):
            (root / "a" / f"copy_{path.name}").write_bytes(path.read_bytes())


def test_a_folder_with_one_class_is_refused(tmp_path: Path, runs_dir: Path) -> None:
    write_folder(tmp_path / "one", {"cats": 12})
    result = run_cli(
        "search", "--space", str(TINY_SPACE), "--data", f"folder:{tmp_path / 'one'}", "--runs-dir", str(runs_dir)
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: image folder {tmp_path / 'one'} has only one class sub-folder ('cats'), but a classifier needs "
        f"at least 2; put the images of each class in their own sub-folder"
    ]
    assert not any(runs_dir.iterdir())


def test_an_export_refuses_to_report_on_test_images_it_trained_on(tmp_path: Path, runs_dir: Path) -> None:
    write_folder(tmp_path / "dup", {"a": 20, "b": 20}, duplicate=True)
    made = run_cli(
        "search", "--space", str(TINY_SPACE), "--data", f"folder:{tmp_path / 'dup'}", "--epochs", "1",
        "--trials", "1", "--name", "dup", "--runs-dir", str(runs_dir),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    exported = run_cli("export", "dup", "--out", str(tmp_path / "model"), "--runs-dir", str(runs_dir))
    assert exported.returncode == 2 and "Traceback" not in exported.stderr
    lines = exported.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert lines[0] == (
        f"error: 6 of the 12 test images are also training images (identical pixels) in the data of run 'dup' "
        f"(folder:{tmp_path / 'dup'}), so its test accuracy would count images the model trained on; remove the "
        f"duplicate images and start a new run"
    )
    assert not (tmp_path / "model").exists()
