"""Ties judged paired: every trial records its best epoch's right/wrong per validation image, and
two trials scored on the same images are tied when their difference is within 1.96 paired
standard errors. Held against the textbook paired difference written out (the mean and variance
of the per-image differences), and against a real search on digits through the CLI."""

from __future__ import annotations

import random
import statistics

import torch
from conftest import TINY_SPACE, load_study, run_cli

from cnnsearch.outcomes import TrialRecord
from cnnsearch.results.leaderboard import leaderboard_rows, tie_note
from cnnsearch.results.noise import PAIRED_TIE_RULE, paired_tied, tied, tied_outcomes, unpack_outcomes
from cnnsearch.run.folder import RunDir
from cnnsearch.train.evaluate import pack_outcomes


def as_int(right: list[bool]) -> int:
    return int("".join("1" if bit else "0" for bit in right), 2) if right else 0


def reference_paired_tied(first: list[bool], second: list[bool]) -> bool:
    """d_i = x_i - y_i per image; tied when |mean d| <= 1.96 * sqrt(var d / n) (population variance)."""
    d = [int(x) - int(y) for x, y in zip(first, second, strict=True)]
    return abs(statistics.fmean(d)) <= 1.96 * (statistics.pvariance(d) / len(d)) ** 0.5 + 1e-9


def test_packed_outcomes_round_trip_for_every_length() -> None:
    rng = random.Random(0)
    for n in (1, 7, 8, 9, 216, 1500):
        right = [rng.random() < 0.8 for _ in range(n)]
        packed = pack_outcomes(torch.tensor(right))
        assert unpack_outcomes(packed, n) == as_int(right)
        assert unpack_outcomes(packed, n + 8) is None  # another split's size: not comparable
    assert unpack_outcomes("", 10) is None and unpack_outcomes("not base64!", 10) is None


def test_paired_ties_match_the_paired_difference_written_out() -> None:
    rng = random.Random(1)
    verdicts = set()
    for _ in range(300):
        n = rng.choice([50, 216, 1500])
        shared = rng.random()  # how often the second network errs where the first does
        first = [rng.random() < rng.choice([0.85, 0.9]) for _ in range(n)]
        second = [x if rng.random() < shared else rng.random() < 0.88 for x in first]
        expected = reference_paired_tied(first, second)
        assert paired_tied(as_int(first), as_int(second), n) == expected
        verdicts.add(expected)
    assert verdicts == {True, False}  # both answers occurred: the check could fail


def test_networks_that_err_alike_are_told_apart_where_the_unpaired_rule_cannot() -> None:
    # 1,500 images: the second gets right 1,333 (88.9%), the first those and 23 more (90.4%).
    n = 1500
    second = [i < 1333 for i in range(n)]
    first = [i < 1356 for i in range(n)]
    p1, p2 = sum(first) / n, sum(second) / n
    assert tied(p1, p2, n)  # unpaired: within about 2.1 points, so "tied"
    assert not paired_tied(as_int(first), as_int(second), n)  # paired: 23 against 0 is no noise
    pair = tied_outcomes((p1, pack_outcomes(torch.tensor(first))), (p2, pack_outcomes(torch.tensor(second))), n)
    assert pair == (False, True)
    assert tied_outcomes((p1, ""), (p2, pack_outcomes(torch.tensor(second))), n) == (True, False)


def test_a_search_records_outcomes_and_the_leaderboard_pairs_its_ties(tmp_path) -> None:
    runs = tmp_path / "runs"
    done = run_cli(
        "search", "--space", str(TINY_SPACE), "--data", "digits", "--name", "p", "--trials", "4", "--epochs", "2",
        "--seed", "0", "--device", "cpu", "--pruner", "none", "--runs-dir", str(runs),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    run = RunDir(runs, "p")
    n = run.read_info().split_sizes["val"]
    complete = [t for t in load_study(runs, "p").get_trials() if TrialRecord.of(t).outcome == "complete"]
    assert len(complete) >= 2
    for trial in complete:
        record = TrialRecord.of(trial)
        bits = unpack_outcomes(record.val_correct, n)
        assert bits is not None and bits.bit_count() == round(record.best_val_acc * n)
    board = leaderboard_rows(run)
    note = tie_note(board)
    assert note is not None and PAIRED_TIE_RULE in note
    best = next(row for row in board.rows if row["rank"] == 1)
    for row in board.rows:
        if row["tied"] is not None:
            first, second = unpack_outcomes(best["val_correct"], n), unpack_outcomes(row["val_correct"], n)
            assert row["tied"] == paired_tied(first, second, n)
