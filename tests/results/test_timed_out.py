"""A trial the trial timeout stopped after some epochs: ranked with those epochs (after the
trained trials) and exportable, while Optuna keeps it PRUNED for TPE. Real training on digits."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from conftest import run_cli

from cnnsearch.export.retrain import export_run
from cnnsearch.run.folder import RunDir
from cnnsearch.search.settings import SearchSettings
from cnnsearch.search.setup import prepare_run
from cnnsearch.search.worker import WorkerLoop


@pytest.fixture(scope="module")
def timed_out(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    """One fixed candidate of 200 epochs stopped by a 2 s trial timeout."""
    folder = tmp_path_factory.mktemp("runs")
    space = folder / "long.toml"
    space.write_text(
        '[network]\nstages = 1\nfilters = 8\n[stage]\nconvs = 1\n[head]\npooling = "gap"\n'
        "[train]\nlr = 0.02\nbatch_size = 32\nepochs = 200\n"
    )
    settings = SearchSettings(
        name="t", space=str(space), data="digits", runs_dir=str(folder), trials=1, device="cpu", trial_timeout_s=2.0
    )
    run, info, loaded = prepare_run(settings)
    WorkerLoop(run, info, loaded, target=1, device="cpu").run_loop()
    (trial,) = run.load_study().trials
    assert trial.state == optuna.trial.TrialState.PRUNED, "TPE learns from it"
    assert trial.user_attrs["outcome"] == "timeout" and 0 < trial.user_attrs["epochs_run"] < 200
    return run


def test_a_timed_out_trial_is_ranked_with_its_epochs_and_says_why(timed_out: RunDir) -> None:
    result = run_cli("leaderboard", "t", "--runs-dir", str(timed_out.runs_dir))
    assert result.returncode == 0, result.stderr
    assert "No finished trials yet" not in result.stdout
    (row,) = [line for line in result.stdout.splitlines() if " timeout " in line]
    epochs = timed_out.load_study().trials[0].user_attrs["epochs_run"]
    assert f" {epochs} " in row
    assert result.stdout.rstrip().endswith(
        "timeout: stopped by --trial-timeout; ranked by the epochs it ran, after the trained trials"
    )


def test_export_chooses_a_timed_out_trial_and_its_weights(timed_out: RunDir, tmp_path: Path) -> None:
    trial = timed_out.load_study().trials[0]
    assert timed_out.weights_file(0).is_file(), "its best epoch's weights are kept"
    result = export_run(timed_out, out=tmp_path / "model", formats=("pt",), no_retrain=True, device="cpu")
    assert result.trial == 0 and result.test_accuracy > 0.2  # above chance (10 classes)
    assert trial.user_attrs["best_epoch"] >= 1
