"""Optional engines' settings are recorded; resumes are recorded; a run's files honour the umask."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, TINY_SPACE, cli_env, load_study, run_cli

from cnnsearch.search.settings import SearchSettings
from cnnsearch.search.setup import prepare_run


def test_study_metric_names_and_run_json_versions(tmp_path: Path) -> None:
    for objective, names in ((("accuracy",), ["val_acc"]), (("accuracy", "params"), ["val_acc", "params"])):
        name = "-".join(objective)
        settings = SearchSettings(
            name=name, space=str(TINY_SPACE), data="digits", runs_dir=str(tmp_path), objective=objective
        )
        run, info, _ = prepare_run(settings)
        assert load_study(tmp_path, name).metric_names == names  # what optuna-dashboard shows
    assert {"scikit-learn", "onnx", "onnxruntime", "torch", "optuna"} <= set(info.versions)
    assert all(version != "not installed" for version in info.versions.values())


def test_every_resume_is_recorded_and_a_refused_one_changes_nothing(runs_dir: Path) -> None:
    base = [
        "--space",
        str(TINY_SPACE),
        "--data",
        "digits",
        "--name",
        "r",
        "--device",
        "cpu",
        "--runs-dir",
        str(runs_dir),
    ]
    assert run_cli("search", *base, "--trials", "1", "--epochs", "1").returncode == 0
    run_json = runs_dir / "r" / "run.json"
    assert json.loads(run_json.read_text())["resumes"] == []
    assert run_cli("search", "--name", "r", "--trials", "2", "--runs-dir", str(runs_dir)).returncode == 0
    (resume,) = json.loads(run_json.read_text())["resumes"]
    assert resume.endswith(f"cnnsearch search --name r --trials 2 --runs-dir {runs_dir}")
    before = run_json.read_bytes()
    refused = run_cli("search", "--name", "r", "--epochs", "3", "--runs-dir", str(runs_dir))
    assert refused.returncode == 2 and "--epochs" in refused.stderr
    assert run_json.read_bytes() == before


def test_files_of_a_run_honour_the_umask(runs_dir: Path) -> None:
    """mkstemp makes 0600 files; a runs folder shared with a team needs the user's umask."""
    command = [sys.executable, "-m", "cnnsearch", "search", "--space", str(TINY_SPACE), "--data", "digits",
               "--name", "u", "--trials", "1", "--epochs", "1", "--device", "cpu", "--runs-dir", str(runs_dir)]  # fmt: skip
    # 002, not the common 022: its 0664 tells a honoured umask apart from both 0600 (mkstemp) and 0644.
    for umask, mode in ((0o002, 0o664),):
        name = f"u{umask:o}"
        command[command.index("--name") + 1] = name
        done = subprocess.run(command, capture_output=True, text=True, env=cli_env(), cwd=ROOT, timeout=240,
                              preexec_fn=lambda umask=umask: os.umask(umask))  # fmt: skip
        assert done.returncode == 0, done.stderr
        report = subprocess.run([*command[:3], "report", name, "--runs-dir", str(runs_dir)], capture_output=True,
                                text=True, env=cli_env(), cwd=ROOT, timeout=240, preexec_fn=lambda umask=umask: os.umask(umask))  # fmt: skip
        assert report.returncode == 0, report.stderr
        model = runs_dir / f"model-{name}"
        export = subprocess.run([*command[:3], "export", name, "--out", str(model), "--no-retrain", "--device", "cpu",
                                 "--runs-dir", str(runs_dir)], capture_output=True, text=True, env=cli_env(), cwd=ROOT,
                                timeout=240, preexec_fn=lambda umask=umask: os.umask(umask))  # fmt: skip
        assert export.returncode == 0, export.stderr
        run_files = [
            runs_dir / name / relative
            for relative in ("run.json", "space.toml", "split.npz", "trials/0.json", "report.html")
        ]
        model_files = [model / file for file in ("model.onnx", "model.ts", "model.pt", "predict.py", "model.json")]
        for path in run_files + model_files:
            got = stat.S_IMODE(path.stat().st_mode)
            assert got == mode, f"{path.name}: {got:o} under umask {umask:03o}"
