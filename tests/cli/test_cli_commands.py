"""Every command that reads or uses a run, run as a user runs it: `python -m cnnsearch` in a subprocess.

One tiny real search (3 trials of 2 epochs on digits) and one export of it are made once for the
module; each test then runs its commands against them, in parallel where they are independent
(each run pays a Python start, most a torch import). Accuracies are never compared with a fixed
number: commands are checked against each other (the leaderboard's best is the trial `show`
describes and `rerun` reproduces; the torch and ONNX runtimes agree).
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, cli_env  # tests/ is on sys.path (conftest.py's folder)

MODEL_FILES = ("model.onnx", "model.ts", "model.pt", "model.json")


def cnnsearch_many(*commands: list[str]) -> list[subprocess.CompletedProcess]:
    """Run `python -m cnnsearch ARGS` for each ARGS at once; results in the same order."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "cnnsearch", *args],
            cwd=ROOT,
            env=cli_env(),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for args in commands
    ]
    results = []
    for args, process in zip(commands, processes):
        stdout, stderr = process.communicate(timeout=240)
        results.append(subprocess.CompletedProcess(args, process.returncode, stdout, stderr))
    return results


def cnnsearch(*args: str) -> subprocess.CompletedProcess:
    return cnnsearch_many(list(args))[0]


def succeeded(result: subprocess.CompletedProcess) -> str:
    """The assertion message for a command that should have exited 0."""
    return f"`cnnsearch {' '.join(result.args)}` exited {result.returncode}:\n{result.stderr}"


@dataclass(frozen=True)
class Made:
    runs_dir: Path
    model: Path  # the exported folder
    export: subprocess.CompletedProcess
    board: str  # `leaderboard cli --format json`, made once

    @property
    def best(self) -> dict:
        return json.loads(self.board)[0]

    def runs(self, *args: str) -> list[str]:
        return [*args, "--runs-dir", str(self.runs_dir)]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Made:
    root = tmp_path_factory.mktemp("cli")
    runs_dir, model = root / "runs", root / "model"
    search = cnnsearch(
        "search", "--space", "tiny", "--data", "digits", "--trials", "3", "--epochs", "2", "--seed", "0",
        "--device", "cpu", "--name", "cli", "--runs-dir", str(runs_dir),
    )  # fmt: skip
    assert search.returncode == 0, succeeded(search)
    export, board = cnnsearch_many(  # independent: export reads the study, writes its folder
        ["export", "cli", "--out", str(model), "--retrain-epochs", "1", "--device", "cpu", "--runs-dir", str(runs_dir)],
        ["leaderboard", "cli", "--format", "json", "--runs-dir", str(runs_dir)],
    )
    assert export.returncode == 0, succeeded(export)
    assert board.returncode == 0, succeeded(board)
    return Made(runs_dir, model, export, board.stdout)


@pytest.fixture(scope="module")
def digit_images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The first 8x8 image of the digits 0..4 as grayscale PNG files."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    folder = tmp_path_factory.mktemp("digits")
    paths = []
    for digit in range(5):
        index = int(np.flatnonzero(digits.target == digit)[0])
        pixels = (digits.images[index] * (255 / 16)).round().astype(np.uint8)  # 0..16 -> 0..255; 2-D: mode L
        paths.append(folder / f"digit{digit}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def model_json(folder: Path) -> dict:
    return json.loads((folder / "model.json").read_text())


def test_export_writes_every_format_and_tests_once(made: Made) -> None:
    for name in MODEL_FILES:
        assert (made.model / name).is_file() and (made.model / name).stat().st_size > 0, f"export wrote no {name}"
    assert re.search(r"-> final test accuracy \d+\.\d\d% on \d+ images", made.export.stdout), made.export.stdout
    for runtime in ("onnx", "torchscript", "pt"):  # each written file was loaded again and compared
        assert re.search(rf"^{runtime}: max \|diff\| \S+ ✓$", made.export.stdout, re.M), made.export.stdout
    description = model_json(made.model)
    assert description["class_names"] == [str(digit) for digit in range(10)]
    assert description["num_classes"] == 10


def test_reading_commands_agree_on_the_best_trial_and_report_draws_plots(made: Made) -> None:
    best = made.best
    runs, table, as_csv, as_json, everything, everything_json, show, report = cnnsearch_many(
        made.runs("runs"),
        made.runs("leaderboard", "cli"),
        made.runs("leaderboard", "cli", "--format", "csv"),
        made.runs("leaderboard", "cli", "--format", "json"),
        made.runs("leaderboard", "cli", "--all"),
        made.runs("leaderboard", "cli", "--all", "--format", "json"),
        made.runs("show", "cli", str(best["trial"])),
        made.runs("report", "cli"),
    )
    for result in (runs, table, as_csv, as_json, everything, everything_json, show, report):
        assert result.returncode == 0, succeeded(result)

    assert re.search(r"│ cli\s+│ digits\s+│\s+3 │", runs.stdout), f"runs does not list 3 trials of cli:\n{runs.stdout}"

    rows = json.loads(as_json.stdout)
    assert rows and rows[0] == best
    assert [row["rank"] for row in rows] == list(range(1, len(rows) + 1))
    assert [row["val_acc"] for row in rows] == sorted((row["val_acc"] for row in rows), reverse=True)
    assert {row["state"] for row in rows} == {"complete"}, "without --all only complete trials are ranked"
    every_row = json.loads(everything_json.stdout)
    assert sorted(row["trial"] for row in every_row) == [0, 1, 2], "--all must list every trial"
    assert f"cli: {len(rows)} trials" in table.stdout and "cli: 3 trials" in everything.stdout
    assert best["arch"] in table.stdout
    for row in every_row:  # the --all table shows each trial's state, pruned ones too
        assert re.search(rf"│\s+{row['trial']} │ {row['state']}\s+│", everything.stdout), everything.stdout

    records = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert {"rank", "trial", "state", "val_acc", "params", "flops", "arch"} <= set(records[0]), as_csv.stdout
    assert [(int(r["trial"]), r["arch"]) for r in records] == [(row["trial"], row["arch"]) for row in rows]

    # `show` describes the leaderboard's best trial, with the same accuracy and size
    assert re.match(rf"trial\s+{best['trial']}\s*$", show.stdout.splitlines()[0]), show.stdout
    assert re.search(rf"^arch\s+{re.escape(best['arch'])}\s*$", show.stdout, re.M), show.stdout
    assert f"{best['val_acc']:.2%}" in show.stdout, "show gives another accuracy than the leaderboard"
    assert re.search(rf"│ total\s+│\s+│\s+│\s+{best['params']:,} │", show.stdout), "layer params do not add up"

    check_report(made.runs_dir / "cli", report)


def check_report(run: Path, report: subprocess.CompletedProcess) -> None:
    from PIL import Image

    html = run / "report.html"
    assert report.stderr.strip() == f"wrote {html}"
    text = html.read_text()
    assert "<img" in text, "the report has no plots"
    plots = sorted((run / "report").glob("*.png"))
    assert plots, "report wrote no PNG files"
    for plot in plots:
        with Image.open(plot) as image:
            image.load()  # decodes every pixel: a truncated file raises here
            assert image.width > 0 and image.height > 0, plot


def test_rerun_reproduces_and_finetune_exports_again(made: Made, tmp_path: Path) -> None:
    best = made.best
    rerun, finetune = cnnsearch_many(
        made.runs("rerun", "cli", str(best["trial"]), "--device", "cpu"),
        ["finetune", str(made.model), "--data", "digits", "--epochs", "1", "--out", str(tmp_path / "ft")]
        + ["--device", "cpu"],
    )
    assert rerun.returncode == 0, succeeded(rerun)
    said = re.fullmatch(
        r"trial (\d+): recorded (\d+\.\d\d)%, reproduced (\d+\.\d\d)% \(difference ([+-]\d+\.\d\d) points\)\n",
        rerun.stdout,
    )
    assert said, f"rerun does not say recorded and reproduced:\n{rerun.stdout}"
    assert int(said[1]) == best["trial"]
    assert said[2] == f"{100 * best['val_acc']:.2f}", "rerun recorded another accuracy than the leaderboard"
    assert float(said[4]) == pytest.approx(float(said[3]) - float(said[2]), abs=0.011)

    assert finetune.returncode == 0, succeeded(finetune)
    assert "test accuracy" in finetune.stdout
    for name in MODEL_FILES:
        assert (tmp_path / "ft" / name).is_file(), f"finetune wrote no {name}"
    assert model_json(tmp_path / "ft")["class_names"] == model_json(made.model)["class_names"]


ROW = re.compile(r"│ (\S+\.png)\s+│ (\S+)\s+│\s+(\d+\.\d\d)% │")  # a predict table row


def test_predict_gives_the_same_classes_with_torch_and_onnx(made: Made, digit_images: list[Path]) -> None:
    images = [str(path) for path in digit_images]
    results = cnnsearch_many(
        *(
            ["predict", str(made.model), *images, "--runtime", runtime, "--format", fmt]
            for runtime in ("torch", "onnx")
            for fmt in ("table", "csv")
        )
    )
    for result in results:
        assert result.returncode == 0, succeeded(result)
    torch_table, torch_csv, onnx_table, onnx_csv = results
    class_names = model_json(made.model)["class_names"]

    classes = {}
    for runtime, table, text in (("torch", torch_table, torch_csv), ("onnx", onnx_table, onnx_csv)):
        assert f"{len(images)} images" in table.stdout
        rows = ROW.findall(table.stdout)
        assert [path for path, _, _ in rows] == images, f"{runtime}: one table row per image:\n{table.stdout}"
        lines = text.stdout.splitlines()
        assert lines[0] == "path,class,probability"
        records = list(csv.DictReader(io.StringIO(text.stdout)))
        assert [record["path"] for record in records] == images, f"{runtime}: one csv row per image"
        for record in records:
            assert record["class"] in class_names and 0 < float(record["probability"]) <= 1, record
        assert [cls for _, cls, _ in rows] == [record["class"] for record in records], "table and csv disagree"
        classes[runtime] = [record["class"] for record in records]
    assert classes["torch"] == classes["onnx"], "the torch and onnx runtimes predict different classes"


def test_errors_are_one_line_on_stderr_and_exit_2(made: Made, tmp_path: Path) -> None:
    unwritten, missing = tmp_path / "X", tmp_path / "NOFOLDER"
    expected = {
        "show": "error: run 'cli' has no trial 999; trials are numbered 0..2",
        "leaderboard": f"error: no run named 'nosuch' in {made.runs_dir}; known runs: cli "
        "(start one with `cnnsearch search --name nosuch`)",
        "export": "error: run 'cli' has no trial 999; trials are numbered 0..2",
        "predict": f"error: model folder {missing} does not exist; pass a folder written by `cnnsearch export`",
    }
    results = cnnsearch_many(
        made.runs("show", "cli", "999"),
        made.runs("leaderboard", "nosuch"),
        made.runs("export", "cli", "--out", str(unwritten), "--trial", "999"),
        ["predict", str(missing), "x.png"],
    )
    for (command, message), result in zip(expected.items(), results):
        assert "Traceback" not in result.stderr, f"{command}:\n{result.stderr}"
        assert (result.returncode, result.stdout, result.stderr.splitlines()) == (2, "", [message]), command
    assert not unwritten.exists(), "a failed export left an output folder behind"
