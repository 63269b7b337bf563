"""The cost model and the budget rule: predictions held against real digits trainings, and
candidates the time left cannot afford ending PRUNED as `too_slow` in a real search."""

from __future__ import annotations

import itertools
import math
import random
import re
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
from conftest import run_cli
from test_search import _library_search, write_space

from cnnsearch.outcomes import TrialRecord
from cnnsearch.search.budget import (
    CHEAP_FACTOR,
    FIRST_RUNG_SHARE,
    first_rung_epochs,
    judge_budget,
    judge_first_epoch,
    judge_time_left,
)
from cnnsearch.search.cost import CostFeatures, CostModel, Observation
from cnnsearch.search.progress import counted_trials
from cnnsearch.search.worker import WorkerLoop
from cnnsearch.train.plan import PLAN_ENV


@pytest.fixture(autouse=True)
def _float32(monkeypatch: pytest.MonkeyPatch) -> None:
    """These timings are float32's. On a CPU with AMX the default plan trains in bf16, where a
    digits trial (~0.1 s an epoch) is dominated by oneDNN's one-off set-up per layer shape, so
    the first trial would not stand for the next (predictions 5x off measured here)."""
    monkeypatch.setenv(PLAN_ENV, "channels_last=off,autocast=off")


STATES = optuna.trial.TrialState


def _features(rng: random.Random) -> CostFeatures:
    return CostFeatures(
        flops=rng.uniform(1e5, 5e7),
        params=rng.uniform(1e3, 1e6),
        train_images=rng.choice([1000, 5000, 10_000]),
        val_images=1000,
        batch_size=rng.choice([32, 64, 128]),
        activations=rng.uniform(1e3, 2e5),
    )


def test_the_fit_recovers_a_known_linear_cost() -> None:
    # A reference device: 50 GFLOP/s of work, 5 ns per feature-map value, 3 ms per step, 0.1 s per epoch.
    truth = (1 / 50e9, 5e-9, 3e-3, 0.1)
    rng = random.Random(0)
    observed = []
    for _ in range(8):
        features = _features(rng)
        seconds = sum(c * t for c, t in zip(truth, features.terms(), strict=True))
        observed.append(Observation(features, seconds * rng.uniform(0.9, 1.1)))  # 10% timing noise
    model = CostModel(observed)
    errors = []
    for _ in range(50):
        features = _features(rng)
        actual = sum(c * t for c, t in zip(truth, features.terms(), strict=True))
        predicted = model.predict(features)
        assert predicted is not None
        errors.append(predicted / actual)
    assert 0.8 < statistics.median(errors) < 1.25
    assert all(0.5 < error < 2 for error in errors), sorted(errors)[:: len(errors) // 5]
    # Without timing noise the fit recovers the device (the prior only breaks ties).
    exact = CostModel(
        [Observation(o.features, sum(c * t for c, t in zip(truth, o.features.terms(), strict=True))) for o in observed]
    )
    for _ in range(20):
        features = _features(rng)
        actual = sum(c * t for c, t in zip(truth, features.terms(), strict=True))
        assert exact.predict(features) == pytest.approx(actual, rel=0.1)


def test_nothing_is_predicted_before_a_trial_has_trained() -> None:
    assert CostModel([]).predict(_features(random.Random(1))) is None
    # ... and with one observation its own cost comes back.
    features = _features(random.Random(2))
    assert CostModel([Observation(features, 4.0)]).predict(features) == pytest.approx(4.0)


def test_the_budget_rule() -> None:
    # No budget: nothing is refused, however slow.
    assert not judge_budget(1e6, epochs=8, first_rung=1, time_left_s=None, budget_s=None).refused
    # A first rung over its share of the budget is refused, with the prediction in the reason.
    slow = judge_budget(70.0, epochs=8, first_rung=1, time_left_s=600, budget_s=600)
    assert "predicted 70 s to its first rung (epoch 1)" in slow.refused and "10% of the 10.0 min budget" in slow.refused
    assert not judge_budget(FIRST_RUNG_SHARE * 600 - 1, epochs=1, first_rung=1, time_left_s=600, budget_s=600).refused
    # In a budget so small that every candidate is over the share, those about as cheap as the fastest still train.
    assert not judge_budget(70.0, epochs=1, first_rung=1, time_left_s=600, budget_s=600, fastest_epoch_s=40).refused
    assert judge_budget(70.0, epochs=1, first_rung=1, time_left_s=600, budget_s=600, fastest_epoch_s=30).refused
    # A whole schedule that cannot finish in the time left is refused.
    late = judge_budget(20.0, epochs=8, first_rung=1, time_left_s=100, budget_s=600)
    assert "predicted 2.7 min for its 8 epochs, more than the 1.7 min left" in late.refused
    assert first_rung_epochs("asha", 8) == 1 and first_rung_epochs("median", 8) == 2
    assert first_rung_epochs("pareto", 8) == 1  # a multi-objective search with a pruner: every epoch
    assert first_rung_epochs("none", 8) == 8
    # A re-run resuming a checkpoint: the epochs still ahead, a first rung already passed not judged.
    resumed = judge_budget(70.0, epochs=1, first_rung=0, time_left_s=100, budget_s=600, remaining=True)
    assert not resumed.refused, "7 of 8 epochs done: 70 s fit in 100 s, and its first rung is behind it"
    cut = judge_budget(70.0, epochs=2, first_rung=0, time_left_s=100, budget_s=600, remaining=True)
    assert "predicted 2.3 min for its 2 remaining epochs, more than the 1.7 min left" in cut.refused and cut.late
    assert not judge_budget(70.0, epochs=8, first_rung=1, time_left_s=600, budget_s=600).late, "its share: not late"
    assert judge_budget(70.0, epochs=8, first_rung=1, time_left_s=60, budget_s=600).late, "near the end: both"


def test_the_median_pruner_judges_from_the_second_epoch_as_the_first_rung_says() -> None:
    """The budget rule charges a median-pruned candidate two epochs before it can be stopped: the
    real pruner must not stop one at epoch 1 (Optuna prunes from step n_warmup_steps on)."""
    from cnnsearch.search.strategies import make_pruner

    study = optuna.create_study(direction="maximize", pruner=make_pruner("median", 8))
    for _ in range(5):  # past n_startup_trials, with good curves
        trial = study.ask()
        for epoch in range(1, 9):
            trial.report(0.9, epoch)
        study.tell(trial, 0.9)
    weak = study.ask()
    weak.report(0.1, 1)
    assert not weak.should_prune(), "stopped at epoch 1, before the first rung the budget charged"
    weak.report(0.1, first_rung_epochs("median", 8))
    assert weak.should_prune()


def _timed_trial(study: optuna.Study, seconds: float, *, worker: str, threads: int | None, **more: object) -> None:
    arch = {"train": {"batch_size": 32}}
    attrs = {"outcome": "complete", "device": "cpu", "epochs_run": 2, "train_seconds": 2 * seconds, **more}
    attrs.update(flops=1_000_000, params=10_000, arch=arch, worker=worker, threads=threads)
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs=attrs))


def test_the_model_calibrates_on_trials_timed_alike() -> None:
    """A run resumed with other --workers trains with other threads, and a worker on another machine
    shares the study, not its speed: neither calibrates this worker's predictions."""
    from cnnsearch.search.cost import observations_from

    study = optuna.create_study(direction="maximize")
    _timed_trial(study, 1.0, worker="here:1", threads=2)
    _timed_trial(study, 4.0, worker="here:2", threads=1)  # --workers 2 on this machine
    _timed_trial(study, 9.0, worker="there:1", threads=2)  # another machine
    _timed_trial(study, 3.0, worker="", threads=None)  # an old record: no worker, no threads
    # A re-run: its seconds include its origin's, timed by another process (perhaps other threads).
    _timed_trial(study, 5.0, worker="here:3", threads=2, resume_of=0, origin=0)
    trials = study.get_trials(deepcopy=False)
    sizes = {"device": "cpu", "train_images": 100, "val_images": 10}
    seconds = sorted(o.epoch_seconds for o in observations_from(trials, **sizes, worker="here:7", threads=2))
    assert seconds == [1.0, 3.0]
    assert sorted(o.epoch_seconds for o in observations_from(trials, **sizes, worker="here:7", threads=1)) == [3.0, 4.0]
    assert len(observations_from(trials, **sizes)) == 4, "without a worker and threads: all but the re-run"


def test_a_stop_for_the_time_is_not_copied_to_a_repeat_but_a_pruner_stop_is() -> None:
    """A trial stopped on measurement for the time left or the budget may fit a resumed run's
    new --timeout: its network is trained again when proposed again. One the pruner stopped is
    a verdict on the network: a repeat copies it."""
    from cnnsearch.search.budget import judge_time_left
    from cnnsearch.search.dedup import duplicate_of

    late = judge_time_left(10.0, epochs_done=1, epochs_left=7, time_left_s=20.0)
    reasons = {"a": f"pruned after epoch 1: {late}", "b": "pruned at epoch 1 by asha (72.00% against 80.00%)"}
    study = optuna.create_study(direction="maximize")
    for network, reason in reasons.items():
        attrs = {"outcome": "pruned", "hash": network, "reason": reason}
        study.add_trial(optuna.trial.create_trial(state=STATES.PRUNED, user_attrs=attrs, intermediate_values={1: 0.7}))
    asked = study.ask()
    assert late and duplicate_of(study, asked, "a") is None
    assert duplicate_of(study, asked, "b").number == 1


def test_predictions_land_within_a_factor_of_two_on_digits(tmp_path: Path) -> None:
    # A space of networks from ~0.1 to ~20 MFLOPs per image, batch sizes 32-128: epoch times differ ~10x.
    space = write_space(
        tmp_path / "costs.toml",
        network__stages="[1, 2]",
        network__filters="[8, 32, 64]",
        stage__convs="[1, 2]",
        stage__pool="[true, false]",
        train__batch_size="[32, 128]",
        train__epochs="2",
    )
    run, info, loaded = _library_search(tmp_path, space, 8, sampler="random", pruner="none")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # steadier timings on a shared machine
    try:
        WorkerLoop(run, info, loaded, target=8, device="cpu").run_loop()
    finally:
        torch.set_num_threads(threads)
    trials = sorted(run.load_study().trials, key=lambda t: t.number)
    records = [TrialRecord.of(t) for t in trials]
    assert records[0].predicted_epoch_s is None, "the first trial seeds the model"
    ratios = [
        record.predicted_epoch_s / (record.train_seconds / record.epochs_run)
        for record in records[3:]
        if record.outcome == "complete" and record.predicted_epoch_s is not None and record.epochs_run
    ]
    assert len(ratios) >= 3, [r.outcome for r in records]
    within = [0.5 <= ratio <= 2.0 for ratio in ratios]
    # Outliers allowed, a third of them: the machine is shared (CI's other test process made two of
    # four miss once, 0.37 and 2.14, while the other two and the median were well within).
    assert sum(within) >= len(ratios) - math.ceil(len(ratios) / 3), ratios
    # The typical one within the factor too (1.42-1.95 happened when the first trials ran while the
    # other test process was busy and the later ones while it was idle).
    assert 0.5 <= statistics.median(ratios) <= 2.0, ratios


def _slow_space(tmp_path: Path, *, convs: str, **more: str) -> Path:
    """Tiny candidates (8 filters) beside ones ~1,000x heavier (256 filters, no pooling), 1 epoch."""
    return write_space(
        tmp_path / "slow.toml",
        network__stages="[1, 3]",
        network__filters="[8, 256]",
        network__width_multiplier="1.0",
        stage__convs=convs,
        stage__pool="false",
        constraints__max_flops="10_000_000_000",
        **{"train__epochs": "1", **more},
    )


BUDGET_S = 15.0


def test_a_candidate_too_slow_for_the_time_left_ends_too_slow(tmp_path: Path) -> None:
    # A tiny network first (it seeds the cost model), then one ~1,000x heavier: 6 convs of 256 filters
    # at 8x8, over a first rung's share of a 15 s budget. Seeded by one tiny trial, the model put it at
    # 3.2 s per epoch on an Intel Xeon (9 s measured): a 40 s budget's 4 s share let it train there.
    space = _slow_space(tmp_path, convs="[1, 2]")
    run, info, loaded = _library_search(tmp_path, space, 3, sampler="random", pruner="none", timeout_s=BUDGET_S)
    study = run.load_study()
    study.enqueue_trial({"network.stages": 1, "network.filters": 8, "stage1.convs": 1})
    heavy = {"network.stages": 3, "network.filters": 256, "stage1.convs": 2, "stage2.convs": 2, "stage3.convs": 2}
    study.enqueue_trial(heavy)
    study.enqueue_trial({"network.stages": 1, "network.filters": 8, "stage1.convs": 2})
    study.enqueue_trial(heavy)  # proposed again: judged again, not copied as a duplicate of a too_slow verdict
    started = time.monotonic()
    WorkerLoop(run, info, loaded, target=3, deadline=started + BUDGET_S, device="cpu").run_loop()
    assert time.monotonic() - started < 30, "the heavy candidate must not have trained"
    trials = sorted(run.load_study().trials, key=lambda t: t.number)
    outcomes = [TrialRecord.of(t).outcome for t in trials]
    assert outcomes[:4] == ["complete", "too_slow", "complete", "too_slow"], outcomes
    again = TrialRecord.of(trials[3])
    assert again.duplicate_of is None and again.reason.startswith("predicted "), again.reason
    slow = trials[1]
    record = TrialRecord.of(slow)
    assert slow.state == STATES.PRUNED, "PRUNED: the sampler learns to leave the region"
    assert record.epochs_run in (None, 0) and record.predicted_epoch_s is not None
    assert record.predicted_epoch_s > FIRST_RUNG_SHARE * BUDGET_S
    assert record.reason.startswith("predicted ") and "to its first rung (epoch 1), more than 10% of" in record.reason
    assert record.flops and record.flops > 1e8, "its costs are recorded"
    # A too_slow candidate never trained: it does not count toward --trials, so three others ran.
    assert len(counted_trials(run.load_study())) == 3
    assert all(o in ("complete", "too_slow") for o in outcomes) and len(trials) == 3 + outcomes.count("too_slow")
    # No trial that trained was predicted unable to finish its first rung (or was cheap: near the fastest).
    records = [TrialRecord.of(trial) for trial in trials]
    fastest = min(r.train_seconds / r.epochs_run for r in records if r.outcome == "complete" and r.epochs_run)
    for other in records:
        if other.outcome == "complete" and other.predicted_epoch_s is not None:
            assert other.predicted_epoch_s <= max(FIRST_RUNG_SHARE * BUDGET_S, CHEAP_FACTOR * fastest)


def test_candidates_too_slow_for_their_share_do_not_end_the_search(tmp_path: Path) -> None:
    """20 refusals in a row for the time left end a search; refusals for a first rung's share of
    the budget say nothing of the time left, so 25 in a row do not, and the tiny one after them trains.
    (They ended it, with 14 of 15 s unused, when a sampler offered mostly heavy networks.)"""
    space = _slow_space(tmp_path, convs="[1, 2, 3]", stage__kernel_size="[3, 5]")
    run, info, loaded = _library_search(tmp_path, space, 2, sampler="random", pruner="none", timeout_s=BUDGET_S)
    study = run.load_study()
    study.enqueue_trial({"network.stages": 1, "network.filters": 8, "stage1.convs": 1, "stage1.kernel_size": 3})
    # 25 distinct networks (distinct hashes: none is a duplicate) of 6-9 convs of 256 filters at
    # 8x8, each ~1,000x the tiny one.
    heavy: dict[str, dict] = {}
    for convs in itertools.product((2, 3), repeat=3):
        for kernels in itertools.product((3, 5), repeat=3):
            params = {"network.stages": 3, "network.filters": 256}
            params |= {f"stage{s}.convs": convs[s - 1] for s in (1, 2, 3)}
            params |= {f"stage{s}.kernel_size": kernels[s - 1] for s in (1, 2, 3)}
            heavy.setdefault(loaded.sample(optuna.trial.FixedTrial(params)).canonical_hash(), params)
    assert len(heavy) >= 25
    for params in list(heavy.values())[:25]:
        study.enqueue_trial(params)
    study.enqueue_trial({"network.stages": 1, "network.filters": 8, "stage1.convs": 2, "stage1.kernel_size": 3})
    started = time.monotonic()
    # The share rule's budget is 15 s; the deadline is far enough that a busy machine (the other
    # test process) cannot make the time left, not the share, refuse the last tiny one.
    WorkerLoop(run, info, loaded, target=2, deadline=started + 120, budget_s=BUDGET_S, device="cpu").run_loop()
    records = [TrialRecord.of(t) for t in sorted(run.load_study().trials, key=lambda t: t.number)]
    assert [r.outcome for r in records[:27]] == ["complete"] + ["too_slow"] * 25 + ["complete"], [
        (r.outcome, r.reason) for r in records
    ]
    assert all("to its first rung (epoch 1), more than 10% of" in r.reason for r in records[1:26])


def test_a_hyperband_candidate_is_charged_the_first_rung_of_its_own_bracket(tmp_path: Path) -> None:
    """Hyperband draws a bracket per trial; a trial of bracket 1 or 2 cannot be pruned before
    epoch 3 or 9. Before, every candidate was charged one epoch, so heavy ones whose first rung
    was far over its share of the budget were let in."""
    from cnnsearch.run.optuna_private import hyperband_first_rung
    from cnnsearch.search.strategies import make_pruner

    space = _slow_space(tmp_path, convs="[1, 2, 3]", stage__kernel_size="[3, 5]", train__epochs="10")
    run, info, loaded = _library_search(tmp_path, space, 2, sampler="random", pruner="hyperband", timeout_s=BUDGET_S)
    study = run.load_study()
    study.enqueue_trial({"network.stages": 1, "network.filters": 8, "stage1.convs": 1, "stage1.kernel_size": 3})
    for convs in itertools.product((2, 3), repeat=3):  # 8 distinct heavy networks, each ~1,000x the tiny one
        params = {"network.stages": 3, "network.filters": 256, **{f"stage{s}.convs": convs[s - 1] for s in (1, 2, 3)}}
        study.enqueue_trial({**params, **{f"stage{s}.kernel_size": 3 for s in (1, 2, 3)}})
    study.enqueue_trial({"network.stages": 1, "network.filters": 8, "stage1.convs": 2, "stage1.kernel_size": 3})
    WorkerLoop(run, info, loaded, target=2, deadline=time.monotonic() + 120, budget_s=BUDGET_S, device="cpu").run_loop()
    trials = sorted(run.load_study().trials, key=lambda t: t.number)
    probe = optuna.create_study(
        study_name=study.study_name, pruner=make_pruner("hyperband", 10)
    )  # brackets by name and number
    charged = {}
    for trial in trials[1:9]:
        record = TrialRecord.of(trial)
        assert record.outcome == "too_slow", (record.outcome, record.reason)
        charged[trial.number] = (hyperband_first_rung(probe, trial), record.reason)
    assert all(f"to its first rung (epoch {min(rung, 10)})" in reason for rung, reason in charged.values()), charged
    assert any(rung > 1 for rung, _ in charged.values()), f"no later bracket drawn: {charged}"


def test_a_first_trial_too_slow_for_the_budget_stops_after_its_first_epoch(tmp_path: Path) -> None:
    # Nothing predicts the first trial. On Fashion-MNIST one took 401 s of a 420 s budget; here a
    # heavy first candidate (2 convs of 256 filters at 8x8, 20 epochs) would take about twice the
    # 40 s budget or more: measured after epoch 1 it is stopped, and the tiny one after it trains in full.
    space = write_space(
        tmp_path / "first.toml",
        network__stages="1",
        network__filters="[8, 256]",
        network__width_multiplier="1.0",
        stage__convs="2",
        stage__pool="false",
        train__epochs="20",
        constraints__max_flops="10_000_000_000",
    )
    run, info, loaded = _library_search(tmp_path, space, 2, sampler="random", pruner="none", timeout_s=40.0)
    study = run.load_study()
    study.enqueue_trial({"network.filters": 256})
    study.enqueue_trial({"network.filters": 8})
    started = time.monotonic()
    WorkerLoop(run, info, loaded, target=2, deadline=started + 40.0, device="cpu").run_loop()
    heavy, tiny = sorted(run.load_study().trials, key=lambda t: t.number)[:2]
    record = TrialRecord.of(heavy)
    assert record.outcome == "pruned" and heavy.state == STATES.PRUNED, record.reason
    assert record.epochs_run == 1 and record.best_val_acc is not None  # it calibrates the cost model
    assert "too slow for the budget: its 20 epochs would take ~" in record.reason
    assert "at the measured" in record.reason and "more than 50% of the 40 s budget" in record.reason
    assert TrialRecord.of(tiny).outcome == "complete" and TrialRecord.of(tiny).epochs_run == 20
    # The rule is the budget's alone, and it spares an epoch near the fastest trained one.
    data = SimpleNamespace(train_y=[0] * 100, val_y=[0] * 10)
    assert judge_first_epoch(60.0, [], device="cpu", data=data, epochs=10, budget_s=None) == ""
    assert judge_first_epoch(4.0, [], device="cpu", data=data, epochs=10, budget_s=100.0) == ""  # 40 s: under half
    assert judge_first_epoch(6.0, [], device="cpu", data=data, epochs=10, budget_s=100.0)  # 60 s: over half
    assert judge_first_epoch(6.0, [], device="cpu", data=data, epochs=1, budget_s=100.0) == ""  # nothing left


def test_a_trial_that_cannot_finish_in_the_time_left_stops_after_an_epoch(tmp_path: Path) -> None:
    # On full Fashion-MNIST (60 minutes) a candidate predicted at 48 s per epoch started with 6.6 min
    # left for its 8 epochs, measured 57 s per epoch and was cut by the deadline after 7: 397 s of a
    # 42-minute search that no one could use. Here the time left (8 s) cannot hold 2,000 epochs of even
    # a tiny network, while the budget (1e6 s) is large enough for the share rules to let it start.
    space = write_space(tmp_path / "long.toml", train__epochs="2000")
    run, info, loaded = _library_search(tmp_path, space, 1, sampler="random", pruner="none")
    WorkerLoop(run, info, loaded, target=1, deadline=time.monotonic() + 8.0, budget_s=1e6, device="cpu").run_loop()
    trial = run.load_study().trials[0]
    record = TrialRecord.of(trial)
    assert record.outcome == "pruned" and trial.state == STATES.PRUNED, record.reason
    assert record.reason.startswith("pruned after epoch ") and "too slow for the time left: its " in record.reason
    assert "remaining epochs would take ~" in record.reason and "at the measured" in record.reason
    assert record.epochs_run is not None and record.epochs_run < 2000  # pruned, not cut by the deadline (above)
    # The rule alone: the epochs left at the pace so far, against the time left.
    assert judge_time_left(10.0, epochs_done=2, epochs_left=3, time_left_s=16.0) == ""  # 15 s fit in 16
    assert "its 3 remaining epochs would take ~15 s" in judge_time_left(
        10.0, epochs_done=2, epochs_left=3, time_left_s=14.0
    )
    assert judge_time_left(10.0, epochs_done=2, epochs_left=3, time_left_s=None) == ""  # no deadline
    assert judge_time_left(10.0, epochs_done=2, epochs_left=0, time_left_s=1.0) == ""  # nothing left


def test_too_slow_is_said_by_the_cli(tmp_path: Path) -> None:
    from cnnsearch.space.parse import load_space

    space = _slow_space(tmp_path, convs="2")
    loaded = load_space(space)
    files = []
    for index, (stages, filters) in enumerate([(1, 8), (3, 256)]):
        arch = loaded.sample(optuna.trial.FixedTrial({"network.stages": stages, "network.filters": filters}))
        path = tmp_path / f"arch{index}.json"
        path.write_text(arch.to_json())
        files += ["--enqueue", str(path)]
    runs = tmp_path / "runs"
    result = run_cli(
        "search", "--space", str(space), "--data", "digits", "--name", "s", "--runs-dir", str(runs),
        "--trials", "2", "--timeout", "40s", "--sampler", "random", "--pruner", "none", *files,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "trial 1 too_slow (predicted" in result.stdout + result.stderr
    assert "to its first rung (epoch 1), more than 10% of the 40 s budget" in result.stdout + result.stderr
    board = run_cli("leaderboard", "s", "--runs-dir", str(runs), "--all")
    assert board.returncode == 0, board.stderr
    assert "too slow" in board.stdout and "predicted" in board.stdout
    # `show` puts the prediction beside the measured seconds per epoch (the refused one has no measurement).
    shown = run_cli("show", "s", "1", "--runs-dir", str(runs))
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"s per epoch\s+predicted \d+\.\d\d *$", shown.stdout, re.M), shown.stdout


def test_a_rerun_is_judged_on_the_epochs_its_checkpoint_does_not_hold(tmp_path: Path) -> None:
    """Interrupted at epoch 6 of 8 and resumed with 25 s left at ~10 s an epoch: the 2 epochs left
    fit, the whole schedule would not (it was refused as too slow, and its 6 epochs wasted)."""
    from cnnsearch.search.budget import judge_candidate
    from cnnsearch.space.parse import load_space
    from cnnsearch.spec import count_params, forward_flops

    arch = load_space(write_space(tmp_path / "one.toml", train__epochs="8")).sample(optuna.trial.FixedTrial({}))
    data = SimpleNamespace(train_y=[0] * 1000, val_y=[0] * 100, input_shape=(1, 8, 8), num_classes=10)
    study = optuna.create_study(direction="maximize")
    attrs = {"outcome": "complete", "device": "cpu", "epochs_run": 8, "train_seconds": 80.0, "arch": arch.to_dict()}
    attrs.update(flops=forward_flops(arch, (1, 8, 8), 10), params=count_params(arch, (1, 8, 8), 10))
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs=attrs))
    judge = {"device": "cpu", "data": data, "pruner": "asha", "time_left_s": 25.0, "budget_s": 600.0}
    fresh = judge_candidate(arch, study.trials, **judge)
    assert fresh.epoch_seconds == pytest.approx(10.0, rel=0.05)
    assert "for its 8 epochs, more than the 25 s left" in fresh.refused and fresh.late
    assert not judge_candidate(arch, study.trials, **judge, epochs_done=6).refused
    assert "for its 3 remaining epochs" in judge_candidate(arch, study.trials, **judge, epochs_done=5).refused
