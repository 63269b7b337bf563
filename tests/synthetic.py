"""Synthetic runs for tests: a run folder and an Optuna study that look like a real search.

Writes `run.json` and a study in the run's own storage, with trials added through Optuna's
API (no training, no torch), so the leaderboard and report can be tested in milliseconds.
The trials follow the contract the search module writes: every outcome the report knows,
realistic user attributes, learning curves as intermediate values. Deterministic for a seed.
"""

from __future__ import annotations

import datetime
import math
import random
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from cnnsearch.errors import InfeasibleArchitecture
from cnnsearch.outcomes import OUTCOMES
from cnnsearch.run.folder import RunDir, RunInfo
from cnnsearch.spec import Architecture, AugmentSettings, ConvLayer, Head, PoolLayer, TrainSettings, layer_table

INPUT_SHAPE = (1, 8, 8)  # C, H, W: the digits data set
CLASS_NAMES = [str(digit) for digit in range(10)]
EPOCHS = 8  # per-trial epoch budget of the synthetic space
START = datetime.datetime(2026, 1, 5, 10, 0, 0)  # first trial start; fixed for determinism

DISTRIBUTIONS = {
    "network.stages": IntDistribution(1, 3),
    "network.filters": CategoricalDistribution([8, 16, 32, 48]),
    "stage1.kernel_size": CategoricalDistribution([3, 5]),
    "head.pooling": CategoricalDistribution(["gap", "flatten"]),
    "train.lr": FloatDistribution(1e-3, 3e-2, log=True),
}

# One block of outcomes, shuffled per block: any run of 25+ trials holds every kind.
OUTCOME_BLOCK = (
    ["complete"] * 15 + ["pruned"] * 4 + ["infeasible", "over_budget", "nan", "duplicate", "error", "timeout"]
)
PRUNED_OUTCOMES = {name for name, outcome in OUTCOMES.items() if outcome.state == "PRUNED"}


def make_synthetic_run(
    runs_dir: Path,
    name: str,
    n_trials: int,
    *,
    seed: int = 0,
    multi_objective: bool = False,
    running: int = 0,
) -> RunDir:
    """Write run `name` under `runs_dir` with `n_trials` finished trials and `running` RUNNING ones.

    Multi-objective runs maximise accuracy and minimise params, as `--objective accuracy,params`.
    A RUNNING trial gets a fresh heartbeat file, like a live worker's.
    """
    rng = random.Random(seed)
    run = RunDir(runs_dir, name)
    info = RunInfo(
        name=name,
        data="digits",
        input_shape=list(INPUT_SHAPE),
        class_names=list(CLASS_NAMES),
        split_seed=seed,
        split_sizes={"train": 1222, "val": 216, "test": 360},
        seed=seed,
        sampler="tpe",
        pruner="hyperband",
        objective=["accuracy", "params"] if multi_objective else ["accuracy"],
        epochs=EPOCHS,
        trial_timeout=600.0,
        command=f"cnnsearch search --name {name} --data digits --trials {n_trials}",
        versions={"python": "3.11", "optuna": optuna.__version__, "torch": "2.9.0"},
        device="cpu",
        created=START.isoformat(timespec="seconds"),
    )
    run.write_info(info)
    if multi_objective:
        study = optuna.create_study(
            study_name=name, storage=run.open_storage(info), directions=["maximize", "minimize"]
        )
    else:
        study = optuna.create_study(study_name=name, storage=run.open_storage(info), direction="maximize")

    outcomes: list[str] = []
    while len(outcomes) < n_trials:
        block = list(OUTCOME_BLOCK)
        rng.shuffle(block)
        outcomes.extend(block)
    outcomes = outcomes[:n_trials]
    if outcomes:
        outcomes[0] = "complete"  # a duplicate needs an earlier result

    clock = START
    finished: list[optuna.trial.FrozenTrial] = []  # templates: their .number is set when added
    for number, outcome in enumerate(outcomes):
        trial = _finished_trial(rng, number, outcome, finished, multi_objective=multi_objective)
        duration = float(trial.user_attrs.get("train_seconds", 0.0)) + rng.uniform(0.2, 1.5)
        trial.datetime_start = clock
        trial.datetime_complete = clock + datetime.timedelta(seconds=duration)
        clock = trial.datetime_complete
        finished.append(trial)

    # Live trials started a few minutes ago, whatever the date of the finished ones.
    live = []
    for index in range(running):
        trial = _running_trial(rng, n_trials + index)
        trial.datetime_start = datetime.datetime.now() - datetime.timedelta(minutes=2 + index)
        live.append(trial)
    study.add_trials(finished + live)

    for number in range(n_trials, n_trials + running):  # Optuna numbers trials in order added
        path = run.heartbeat_file(number)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    return run


# ---- one trial -------------------------------------------------------------------------
def _sample(rng: random.Random, *, infeasible: bool = False) -> tuple[dict[str, Any], Architecture]:
    """Searched values and the architecture they describe."""
    params = {
        "network.stages": rng.randint(1, 3),
        "network.filters": rng.choice([8, 16, 32, 48]),
        "stage1.kernel_size": rng.choice([3, 5]),
        "head.pooling": rng.choice(["gap", "flatten"]),
        "train.lr": math.exp(rng.uniform(math.log(1e-3), math.log(3e-2))),
    }
    activation = rng.choice(["relu", "silu", "gelu"])
    batch_norm = rng.random() < 0.8
    padding = "valid" if infeasible else "same"
    layers: list[ConvLayer | PoolLayer] = []
    filters = params["network.filters"]
    stages = 3 if infeasible else params["network.stages"]
    if infeasible:
        params["network.stages"] = 3
        params["stage1.kernel_size"] = 5
    for stage in range(1, stages + 1):
        kernel = params["stage1.kernel_size"] if stage == 1 else rng.choice([3, 5])
        if infeasible:
            kernel = 5
        for _ in range(rng.choice([1, 2])):
            layers.append(ConvLayer(filters, kernel, padding=padding, activation=activation, batch_norm=batch_norm))
        if rng.random() < 0.6:
            layers.append(PoolLayer(rng.choice(["max", "avg"])))
        filters *= 2
    arch = Architecture(
        layers=tuple(layers),
        head=Head(
            pooling=params["head.pooling"],
            dense=rng.choice([(), (32,), (64,)]),
            dropout=rng.choice([0.0, 0.1, 0.2, 0.3]),
        ),
        train=TrainSettings(lr=params["train.lr"], batch_size=rng.choice([32, 64, 128]), epochs=EPOCHS),
        augment=AugmentSettings(translate=rng.choice([0, 1]), cutout=rng.choice([0, 2])),
    )
    return params, arch


def _cost(arch: Architecture) -> tuple[int, int]:
    """(params, FLOPs for one image) by shape arithmetic; raises InfeasibleArchitecture."""
    rows = layer_table(arch, INPUT_SHAPE, len(CLASS_NAMES))
    params = sum(row.params for row in rows)
    flops = 0
    for row in rows:
        pixels = row.output_shape[1] * row.output_shape[2] if len(row.output_shape) == 3 else 1
        flops += 2 * row.params * pixels
    return params, flops


def _curve(rng: random.Random, params: dict[str, Any], epochs: int) -> list[float]:
    """Validation accuracy per epoch: rises towards a final value the searched values set."""
    final = (
        0.86
        + 0.025 * math.log2(params["network.filters"] / 8)
        + 0.02 * (params["network.stages"] - 1)
        - 0.08 * abs(math.log10(params["train.lr"] / 6e-3))
        + rng.gauss(0.0, 0.01)
    )
    final = min(max(final, 0.15), 0.995)
    curve = []
    for epoch in range(epochs):
        value = 0.1 + (final - 0.1) * (1.0 - math.exp(-(epoch + 1) / 1.6)) + rng.gauss(0.0, 0.006)
        curve.append(round(min(max(value, 0.0), 1.0), 4))
    return curve


def _common_attrs(rng: random.Random, number: int, arch: Architecture) -> dict[str, Any]:
    return {
        "arch": arch.to_dict(),
        "compact": arch.compact(),
        "hash": arch.canonical_hash(),
        "seed": number,
        "worker": f"synthetic:{1000 + number % 2}",
        "device": "cpu",
    }


def _finished_trial(
    rng: random.Random,
    number: int,
    outcome: str,
    earlier: list[optuna.trial.FrozenTrial],
    *,
    multi_objective: bool,
) -> optuna.trial.FrozenTrial:
    # Optuna numbers trials in the order they are added: the index in `earlier` is the number.
    originals = [index for index, trial in enumerate(earlier) if trial.user_attrs.get("outcome") == "complete"]
    if outcome == "duplicate" and originals:
        original_number = rng.choice(originals)
        original = earlier[original_number]
        attrs = dict(original.user_attrs)
        attrs.update(
            outcome="duplicate",
            duplicate_of=original_number,
            reason=f"same architecture and settings as trial {original_number}; not retrained",
            train_seconds=0.0,
            seed=number,
        )
        return optuna.trial.create_trial(
            state=TrialState.COMPLETE,
            values=original.values,
            params=dict(original.params),
            distributions=dict(original.distributions),
            user_attrs=attrs,
            intermediate_values=dict(original.intermediate_values),
        )
    if outcome == "duplicate":
        outcome = "complete"

    params, arch = _sample(rng, infeasible=outcome == "infeasible")
    attrs = _common_attrs(rng, number, arch)
    attrs["outcome"] = outcome
    try:
        n_params, flops = _cost(arch)
    except InfeasibleArchitecture as error:
        attrs["reason"] = f"cannot fit the 8x8 images: {error}"
        return _create(TrialState.PRUNED, params, attrs)
    attrs.update(params=n_params, flops=flops, latency_ms=round(0.05 + flops / 2e7 + rng.uniform(0, 0.05), 4))

    if outcome == "over_budget":
        attrs["reason"] = f"{n_params} parameters exceed max_params={n_params // 2}"
        return _create(TrialState.PRUNED, params, attrs)
    if outcome == "error":
        attrs["reason"] = "RuntimeError: synthetic failure in the data loader"
        return _create(TrialState.FAIL, params, attrs)

    seconds_per_epoch = 0.4 + n_params / 40_000 + rng.uniform(0.0, 0.3)
    curve = _curve(rng, params, EPOCHS)
    if outcome == "pruned":
        curve = [round(value - 0.04, 4) for value in curve[: rng.randint(1, 4)]]
        attrs["reason"] = f"pruned by hyperband after epoch {len(curve)}"
    elif outcome == "nan":
        curve = curve[: rng.randint(1, 3)]
        attrs["reason"] = f"training loss became NaN at epoch {len(curve) + 1} (lr {params['train.lr']:.3g})"
    elif outcome == "timeout":
        curve = curve[:5]
        attrs["reason"] = "stopped after 600 s (trial_timeout)"
    losses = [round(2.3 * (1.0 - value) + 0.05, 4) for value in curve]
    best = max(curve)
    attrs.update(
        val_acc=curve,
        train_loss=losses,
        best_val_acc=best,
        final_val_acc=curve[-1],
        best_epoch=curve.index(best),
        epochs_run=len(curve),
        train_seconds=round(seconds_per_epoch * len(curve), 3),
        images_per_sec=round(1222 / seconds_per_epoch, 1),
    )
    intermediate = dict(enumerate(curve))
    if outcome != "complete":
        return _create(TrialState.PRUNED, params, attrs, intermediate)
    values = [best, float(n_params)] if multi_objective else [best]
    return optuna.trial.create_trial(
        state=TrialState.COMPLETE,
        values=values,
        params=params,
        distributions=dict(DISTRIBUTIONS),
        user_attrs=attrs,
        intermediate_values=intermediate,
    )


def _create(
    state: TrialState,
    params: dict[str, Any],
    attrs: dict[str, Any],
    intermediate: dict[int, float] | None = None,
) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(
        state=state,
        params=params,
        distributions=dict(DISTRIBUTIONS),
        user_attrs=attrs,
        intermediate_values=intermediate,
    )


def _running_trial(rng: random.Random, number: int) -> optuna.trial.FrozenTrial:
    params, arch = _sample(rng)
    n_params, flops = _cost(arch)
    curve = _curve(rng, params, EPOCHS)[: rng.randint(1, EPOCHS - 1)]
    attrs = _common_attrs(rng, number, arch)
    attrs.update(params=n_params, flops=flops, val_acc=curve, current_epoch=len(curve))
    return optuna.trial.create_trial(
        state=TrialState.RUNNING,
        params=params,
        distributions=dict(DISTRIBUTIONS),
        user_attrs=attrs,
        intermediate_values=dict(enumerate(curve)),
    )
