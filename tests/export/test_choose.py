"""export's choice when no trial is named: the best validation accuracy (the default), or with
--choose cheapest-tied the cheapest of the trials tied with it within the validation noise (the
leaderboard's ≈). Synthetic runs
(tests/synthetic.py: digits architectures, no search) exported through the real CLI, each
retrained one epoch on digits.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import run_cli
from synthetic import make_synthetic_run  # tests/ is on sys.path (conftest.py's folder)

from cnnsearch.export.choose import choose_export_trial
from cnnsearch.outcomes import TrialRecord
from cnnsearch.results.leaderboard import leaderboard_rows
from cnnsearch.run.folder import RunDir

FAST = ("--retrain-epochs", "1", "--format", "pt", "--device", "cpu")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("runs")
    make_synthetic_run(folder, "small", 60, seed=1)  # 216 validation images
    return folder


def board(runs: Path, name: str) -> list[dict]:
    """The leaderboard's rows, best first (tests/results/test_noise.py checks them through the CLI)."""
    return leaderboard_rows(RunDir(runs, name)).rows


def cheapest_tied(rows: list[dict]) -> dict:
    """The README's rule, written out: fewest FLOPs, then params, then accuracy, then trial."""
    tied = [row for row in rows if row["tied"]]
    return min(tied, key=lambda row: (row["flops"], row["params"], -row["val_acc"], row["trial"]))


def test_cheapest_tied_takes_the_cheapest_tied_trial_and_says_why(runs: Path, tmp_path: Path) -> None:
    rows = board(runs, "small")
    best, cheap = rows[0], cheapest_tied(rows)
    assert cheap["trial"] != best["trial"] and cheap["flops"] < best["flops"], "the run must have a cheaper tie"
    done = run_cli(
        "export", "small", "--out", str(tmp_path / "model"), "--choose", "cheapest-tied", *FAST, "--runs-dir", str(runs)
    )
    assert done.returncode == 0, done.stderr
    ratio = best["flops"] / cheap["flops"]
    why = (
        f"chose trial {cheap['trial']}: tied with the best (trial {best['trial']}, "
        f"{best['val_acc']:.2%} ±{100 * best['val_ci']:.2f}) at {cheap['val_acc']:.2%} ±{100 * cheap['val_ci']:.2f}, "
        f"and {ratio:.1f}x fewer FLOPs (the cheapest of the {sum(row['tied'] for row in rows)} tied, "
        f"by --choose cheapest-tied)"
    )
    lines = done.stdout.splitlines()
    assert lines[:2] == [why, f"trial {cheap['trial']} {cheap['arch']}"]
    assert done.stderr.splitlines()[0].startswith(f"final training of trial {cheap['trial']}: 1 epoch (")
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["trial"] == cheap["trial"] and meta["val_accuracy"] == cheap["val_acc"]
    assert meta["chosen_because"] == why.removeprefix("chose ")


def test_export_takes_the_top_accuracy_by_default(runs: Path, tmp_path: Path) -> None:
    rows = board(runs, "small")
    best, cheap = rows[0], cheapest_tied(rows)
    done = run_cli("export", "small", "--out", str(tmp_path / "model"), *FAST, "--runs-dir", str(runs))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == (
        f"chose trial {best['trial']}: the best validation accuracy, {best['val_acc']:.2%} "
        f"±{100 * best['val_ci']:.2f}; trial {cheap['trial']} is tied with it and has "
        f"{best['flops'] / cheap['flops']:.1f}x fewer FLOPs (--choose cheapest-tied takes it)"
    )
    assert json.loads((tmp_path / "model" / "model.json").read_text())["trial"] == best["trial"]


def test_more_validation_images_leave_fewer_ties(runs: Path) -> None:
    small = RunDir(runs, "small")
    choice = choose_export_trial(small, rule="cheapest-tied")
    assert choice is not None and choice.val_size == 216
    info = small.read_info()
    counts = {}
    for val_size in (216, 2_000, 1_000_000):
        info.split_sizes["val"] = val_size
        small.write_info(info)
        choice = choose_export_trial(small, rule="cheapest-tied")
        assert choice is not None and choice.best.number == board(runs, "small")[0]["trial"]
        for candidate in choice.tied:  # the rule written out
            p1, p2 = choice.best.val_acc, candidate.val_acc
            assert abs(p1 - p2) <= 1.96 * math.sqrt((p1 * (1 - p1) + p2 * (1 - p2)) / val_size) + 1e-12
        counts[val_size] = len(choice.tied)
    assert counts[216] > counts[2_000] > counts[1_000_000] == 1
    assert choice.chosen.number == choice.best.number  # nothing is tied: the best is the cheapest tied
    assert choice.line().endswith("; no other trial is within its noise (1,000,000 validation images)")
    info.split_sizes["val"] = 216
    small.write_info(info)


def test_choose_is_refused_where_it_has_no_effect(runs: Path, tmp_path: Path) -> None:
    for other, text in ((("--trial", "3"), "--trial 3"), (("--top", "2"), "--top 2")):
        done = run_cli(
            "export", "small", "--out", str(tmp_path / "m"), "--choose", "best", *other, "--runs-dir", str(runs)
        )
        assert done.returncode == 2
        assert done.stderr.strip() == (
            f"error: --choose picks among the search's trials, so it has no effect with {text}; drop one of them"
        )
        assert not (tmp_path / "m").exists()


def test_search_export_takes_a_tied_trial_the_time_left_can_retrain(runs: Path, tmp_path: Path) -> None:
    """`search --export`: when the time left would ship only the best trial's search weights, a
    trial tied with it that the time left retrains for its search's epochs is exported instead."""
    from cnnsearch.export.retrain import export_run

    run = RunDir(runs, "small")
    choice = choose_export_trial(run)
    assert choice is not None
    pool = 1222 + 216

    def epoch_s(candidate) -> float:  # the schedule's rule: the trial's own speed, scaled to train+validation
        record = TrialRecord.of(run.load_study().trials[candidate.weights_trial])
        return record.train_seconds / record.epochs_run * pool / 1222

    best = choice.chosen
    faster = [c for c in choice.tied if c.number != best.number and epoch_s(c) * 1.5 < epoch_s(best)]
    assert faster, "the synthetic run must have a tied trial faster than the best"
    target = min(faster, key=lambda c: (-c.val_acc, c.number))
    budget = 8 * epoch_s(target) * 1.01  # its 8 epochs fit; the best's do not
    assert budget < 8 * epoch_s(best)
    # The rule written out: the most accurate tied trial whose 8 epochs fit.
    fitting = [c for c in choice.tied if c.number != best.number and int(budget // epoch_s(c)) >= 8]
    expected = min(fitting, key=lambda c: (-c.val_acc, c.number))
    result = export_run(
        run, out=tmp_path / "m", final_budget_s=budget, weights_when_short=True, formats=("pt",), device="cpu"
    )
    assert result.trial == expected.number
    assert result.chosen_because.startswith(
        f"trial {expected.number}: tied with the best (trial {best.number}, "
    ) and result.chosen_because.endswith(f"where trial {best.number} would get fewer than its search's 8 epochs")
    assert result.retrain_epochs is not None and result.retrain_epochs >= 8
