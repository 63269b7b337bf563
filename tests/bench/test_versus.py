"""bench/versus.py's plumbing: the contender table and its flags, the images it gives the peer,
the race to the baseline's best, and the peer script itself on a tiny budget."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, TINY_SPACE, cli_env  # tests/ is on sys.path (conftest.py's folder)

sys.path.insert(0, str(ROOT / "bench"))
import versus  # noqa: E402
from versus_run import Result  # noqa: E402

FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_contender_flags_extend_the_table_or_add_a_cnnsearch_contender() -> None:
    chosen = versus.parse_contenders(
        "cnnsearch,peer", ["peer=--epochs 3", "seq=--space search_spaces/sequence.toml --epochs 4"]
    )
    assert [(c.name, c.kind, c.args) for c in chosen] == [
        ("cnnsearch", "cnnsearch", ()),
        ("peer", "peer", ("--epochs", "3")),
        ("seq", "cnnsearch", ("--space", "search_spaces/sequence.toml", "--epochs", "4")),
    ]
    random = versus.parse_contenders("cnnsearch-random", ["cnnsearch-random=--epochs 2"])[0]
    assert random.args == ("--sampler", "random", "--pruner", "none", "--epochs", "2")


@pytest.mark.parametrize(
    ("names", "extras", "message"),
    [
        ("cnnsearch,nope", [], "unknown contender(s) nope; known: cnnsearch, cnnsearch-random, peer"),
        ("cnnsearch", ["gp --sampler gp"], "--contender 'gp --sampler gp': write NAME=ARGS"),
    ],
)
def test_bad_contenders_are_refused(names: str, extras: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as stop:
        versus.parse_contenders(names, extras)
    assert str(stop.value).startswith(message)


def test_time_to_the_baseline_best_and_the_summary() -> None:
    base = Result("cnnsearch-random", 0, 100, wall_s=100, events=[(30, 0.80), (90, 0.85)], trial_s=80, cut_s=0)
    fast = Result("cnnsearch", 0, 100, wall_s=115, events=[(10, 0.70), (20, 0.86), (50, 0.90)], trial_s=80, cut_s=20)
    slow = Result("peer", 0, 100, wall_s=100, events=[(40, 0.84)])
    assert fast.time_to(base.final_best) == 20 and math.isinf(slow.time_to(base.final_best))
    assert fast.over and not base.over and fast.cut_share == 0.25
    contenders = versus.parse_contenders("cnnsearch,cnnsearch-random,peer", [])
    rows = {row["contender"]: row for row in versus.summarise(contenders, [base, fast, slow], "cnnsearch-random")}
    assert rows["cnnsearch"]["ratio"] == pytest.approx(20 / 90)
    assert rows["cnnsearch-random"]["ratio"] == 1 and math.isinf(rows["peer"]["time_to_base_s"])
    assert rows["cnnsearch"]["over"] == 1


def test_the_peer_gets_the_images_of_cnnsearch_subset_and_split(tmp_path: Path) -> None:
    from cnnsearch.data.load import load_dataset_cached
    from cnnsearch.search.settings import SearchSettings
    from cnnsearch.search.setup import prepare_run

    dataset = load_dataset_cached("digits")
    train, val = versus.cnnsearch_images(dataset, 300, 1)
    assert len(train) + len(val) == 300 and not set(train) & set(val)
    settings = SearchSettings(
        name="sub", space=str(TINY_SPACE), data="digits", subset=300, runs_dir=str(tmp_path / "runs"), seed=1
    )
    prepare_run(settings)  # a real run's subset and split, nothing trained
    pool = np.sort(np.concatenate([train, val]))
    assert versus.run_split_matches(tmp_path, "sub", train, val, pool) is True
    assert versus.run_split_matches(tmp_path, "sub", val, train, pool) is False


@pytest.mark.skipif(not FASHION.is_dir(), reason="needs Debian's dataset-fashion-mnist")
def test_the_peer_searches_retrains_and_saves_a_torchscript_model(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    indices = tmp_path / "images.npz"
    np.savez(indices, train=np.sort(rng.choice(30_000, 200, replace=False)), val=np.arange(30_000, 30_100))
    command = [sys.executable, str(ROOT / "bench" / "peers" / "optuna_lightning.py"), "--budget", "1"]
    command += ["--epochs", "1", "--indices", str(indices), "--out", str(tmp_path / "out")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=cli_env(), cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "peer.json").read_text())
    # At least one: on a fast machine a second 200-image trial fits the 1 s budget too.
    assert summary["trials_finished"] >= 1 and summary["train_images"] == 200 and summary["val_images"] == 100
    import torch

    model = torch.jit.load(summary["model"])
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert sum(p.numel() for p in model.parameters()) == summary["params"]


def test_the_summary_over_invocations_keeps_the_newest_row_per_seed_and_pairs_seeds(tmp_path: Path) -> None:
    header = (ROOT / "bench" / "results" / "versus.csv").read_text().splitlines()[0].split(",")
    path = tmp_path / "versus.csv"

    def row(contender: str, seed: int, acc: float, when: str, commit: str = "abc1234") -> dict[str, object]:
        cells: dict[str, object] = dict.fromkeys(header, "")
        cells.update(
            timestamp=when, versions=f"torch=2.13.0 commit={commit}", contender=contender, seed=seed,
            budget_s=600, train_images=10000, test_acc=acc, params=1000, trials_finished=3, outcomes="{}",
            cut_share=0.25, wall_s=590, over=False, ratio="nan", time_to_baseline_best_s="nan",
        )  # fmt: skip
        return cells

    rows = [
        row("cnnsearch", 0, 0.80, "2026-12-01T10:00"),  # replaced by the newer seed-0 row below
        row("cnnsearch", 0, 0.90, "2026-12-01T11:00"),
        row("cnnsearch", 1, 0.88, "2026-12-01T11:00"),
        row("peer", 0, 0.86, "2026-12-01T11:00"),
        row("peer", 1, 0.87, "2026-12-01T11:00"),
        row("peer", 2, 0.99, "2026-12-01T11:00", commit="other00"),  # another commit: left out
    ]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "versus_summary.py"), "--csv", str(path), "--commit", "abc"],
        capture_output=True, text=True, env=cli_env(), check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "| cnnsearch | 89.00% ± 1.41 |" in result.stdout  # seeds 0 (newest: 90%) and 1 (88%)
    assert "| peer | 86.50% ± 0.71 |" in result.stdout
    assert "seed 0 +4.00, seed 1 +1.00; mean +2.50 ± 2.12 points" in result.stdout
    assert "cnnsearch +2.50 points of test accuracy over the peer (target >= 3)" in result.stdout


def test_the_summary_reruns_the_race_across_invocations_from_the_kept_run_folders(tmp_path: Path) -> None:
    """Two invocations (two --work folders): the random baseline in one, TPE in the other; the
    ratio is timed from each run folder's creation to its trials' completion, in their real studies."""
    from datetime import datetime, timedelta

    import optuna

    from cnnsearch.run.folder import RunDir
    from cnnsearch.search.settings import SearchSettings
    from cnnsearch.search.setup import prepare_run

    def kept_run(work: str, name: str, finished: list[tuple[float, float]]) -> None:
        runs = tmp_path / work / "runs"
        prepare_run(SearchSettings(name=name, space=str(TINY_SPACE), data="digits", subset=200, runs_dir=str(runs)))
        run = RunDir(runs, name)
        created = datetime.fromisoformat(json.loads(run.run_file.read_text())["created"])
        study = run.load_study()
        for seconds, accuracy in finished:  # trial ends `seconds` after the run was created
            end = created + timedelta(seconds=seconds)
            study.add_trial(
                optuna.trial.FrozenTrial(
                    number=0, trial_id=0, state=optuna.trial.TrialState.COMPLETE, value=accuracy,
                    datetime_start=end - timedelta(seconds=5), datetime_complete=end, params={}, distributions={},
                    user_attrs={"best_val_acc": accuracy, "outcome": "complete"}, system_attrs={},
                    intermediate_values={},
                )
            )  # fmt: skip

    kept_run("a", "random-s0", [(100, 0.80), (300, 0.85)])  # random's final best 0.85, reached at 300 s
    kept_run("b", "tpe-s0", [(60, 0.84), (90, 0.86)])  # TPE passes it at 90 s: ratio 0.3
    kept_run("b", "gp-s0", [(50, 0.70)])  # never
    kept_run("b", "old-s0", [(10, 0.99)])  # made after its row was recorded: another run of that name
    header = (ROOT / "bench" / "results" / "versus.csv").read_text().splitlines()[0].split(",")
    path = tmp_path / "versus.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        for contender in ("random", "tpe", "gp", "pso", "old"):  # pso: its row has no run folder
            cells: dict[str, object] = dict.fromkeys(header, "")
            cells.update(
                timestamp="2000-01-01T00:00:00+00:00" if contender == "old" else "2099-01-01T00:00:00+00:00",
                versions="commit=abc1234", contender=contender, seed=0,
                budget_s=600, train_images=10000, test_acc=0.85, params=1000, trials_finished=2, outcomes="{}",
                cut_share=0.0, wall_s=590, over=False, ratio=0.5, time_to_baseline_best_s=42,
                command="bench/versus.py --baseline random" if contender != "old" else "bench/versus.py",
            )  # fmt: skip
            writer.writerow(cells)
    command = [sys.executable, str(ROOT / "bench" / "versus_summary.py"), "--csv", str(path), "--baseline", "random"]
    command += ["--race-runs", str(tmp_path / "a"), "--race-runs", str(tmp_path / "b")]
    result = subprocess.run(command, capture_output=True, text=True, env=cli_env(), check=False)
    assert result.returncode == 0, result.stderr
    summary = result.stdout.split("\n\n")[0].splitlines()  # the summary table (the per-seed table follows)
    table = {line.split("|")[1].strip(): line.split("|") for line in summary if line.startswith("|")}
    assert table["tpe"][6:8] == [" 90.0 ", " 0.3 "], table["tpe"]
    assert table["random"][6:8] == [" 300.0 ", " 1 "], table["random"]
    assert table["gp"][6].strip() == "never"
    assert "pso seed 0 (no run folder; its recorded figures kept)" in result.stdout
    assert table["pso"][6:8] == [" 42.0 ", " 0.5 "], table["pso"]  # the row's own figures
    # Another run's folder by that name, and a ratio recorded against another baseline: neither is used.
    assert "old seed 0 (no run folder; recorded against another baseline: left out)" in result.stdout
    assert table["old"][6].strip() == "–", table["old"]


def test_the_peer_cuts_a_trial_at_its_deadline_and_reserves_the_best_ones_retrain() -> None:
    """The peer keeps the budget as cnnsearch does: a trial still training when the final retrain
    must start is stopped by Lightning's max_time (and recorded as cut, not scored)."""
    sys.path.insert(0, str(ROOT / "bench" / "peers"))
    import optuna_lightning as peer
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    records = [
        {"state": "complete", "start_s": 0, "end_s": 10, "val_acc": 0.8},
        {"state": "complete", "start_s": 10, "end_s": 50, "val_acc": 0.9},  # the best: its retrain is reserved
        {"state": "pruned", "start_s": 50, "end_s": 90, "val_acc": 0.95},  # pruned: never the best
    ]
    assert peer.retrain_s(records) == pytest.approx(40 * peer.RETRAIN_SHARE * 1.25)
    assert peer.retrain_s(records[2:]) is None  # nothing completed: nothing to cut for

    torch.manual_seed(0)
    data = TensorDataset(torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,)))
    params = {"n_layers": 1, "filters_0": 16, "kernel_0": 3, "dropout": 0.0, "dense": 32, "lr": 1e-3}
    model = peer.Net(params, input_shape=(1, 28, 28), classes=10)
    fit = peer.trainer(5000, [], validate=False, max_s=1.0)  # 5000 epochs: about a minute uncut
    started = time.monotonic()
    fit.fit(model, DataLoader(data, batch_size=32))
    assert time.monotonic() - started < 30 and peer.was_cut(fit, 5000, pruned=False)
    whole = peer.trainer(2, [], validate=False, max_s=60.0)  # ends long before its max_time
    whole.fit(model, DataLoader(data, batch_size=32))
    assert not peer.was_cut(whole, 2, pruned=False) and whole.current_epoch == 2
