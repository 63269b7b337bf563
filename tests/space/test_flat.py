"""The flat encoding (space/flat.py): every parameter a space can ask for, the same networks as
today's sampling for the same active values, and a hash that ignores the inactive ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from cnnsearch.space.flat import active_params, flat_dimensions, network_key, sample_flat
from cnnsearch.space.parse import SearchSpace, load_space, parse_space
from cnnsearch.space.sample import params_for, sample_architecture

SPACES = sorted((Path(__file__).resolve().parents[2] / "search_spaces").glob("*.toml"))
# Every condition of the stage form in one space: per-stage filters and layer keys, sgd's
# momentum, a warm-up schedule, a dense layer, per-stage pooling.
CONDITIONAL = parse_space(
    {
        "network": {"stages": {"low": 1, "high": 3}, "activation": ["relu", "silu"]},
        "stage": {
            "filters": {"low": 8, "high": 64, "log": True},
            "convs": [1, 2],
            "kernel_size": [3, 5],
            "pool": [True, False],
            "pool_type": ["max", "avg"],
        },
        "head": {"dense_layers": [0, 1], "dense_units": [16, 32], "activation": ["relu", "gelu"]},
        "train": {
            "optimizer": ["adamw", "sgd"],
            "momentum": {"low": 0.8, "high": 0.95},
            "schedule": ["constant", "cosine"],
            "warmup": {"low": 0.0, "high": 0.3, "step": 0.1},
            "epochs": [1, 2],
        },
    },
    source="conditional",
)
ALL_SPACES = [load_space(path) for path in SPACES] + [CONDITIONAL]
IDS = [path.stem for path in SPACES] + ["conditional"]


class _Asked:
    """Wraps a trial and notes the names sampling asks it for (the candidate's active parameters)."""

    def __init__(self, trial: Any) -> None:
        self.trial, self.names = trial, []

    def __getattr__(self, method: str) -> Any:
        def ask(name: str, *args: Any, **kwargs: Any) -> Any:
            self.names.append(name)
            return getattr(self.trial, method)(name, *args, **kwargs)

        return ask


def _flat_values(space: SearchSpace, seed: int) -> dict[str, Any]:
    """One random value for every flat parameter, drawn by a real Optuna trial."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    trial = study.ask(flat_dimensions(space))
    return dict(trial.params)


@pytest.mark.parametrize("space", ALL_SPACES, ids=IDS)
def test_flat_dimensions_are_exactly_what_sampling_can_ask_for(space: SearchSpace) -> None:
    """A name sampling asks for but the flat list lacks would stay random for GP; one it never
    asks for would be a dead coordinate: 300 random candidates see every one, with its distribution."""
    flat = flat_dimensions(space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen: dict[str, Any] = {}
    for _ in range(300):
        trial = study.ask()
        space.sample(trial)
        seen.update(trial.distributions)
    assert seen == flat


def test_epochs_given_by_the_run_is_no_parameter() -> None:
    assert "train.epochs" in flat_dimensions(CONDITIONAL)
    assert "train.epochs" not in flat_dimensions(CONDITIONAL, epochs=3)


@pytest.mark.parametrize("space", ALL_SPACES, ids=IDS)
def test_flat_sampling_builds_the_network_of_todays_sampling_for_the_same_active_values(space: SearchSpace) -> None:
    fewer: list[bool] = []  # whether the network used fewer values than the flat encoding drew
    for seed in range(25):
        values = _flat_values(space, seed)
        asked = _Asked(optuna.trial.FixedTrial(values))
        flat_arch = sample_flat(space, asked)
        # The second pass (sample_architecture's) asks only what the network uses.
        active = {name: values[name] for name in dict.fromkeys(asked.names[len(flat_dimensions(space)) :])}
        today = sample_architecture(space, optuna.trial.FixedTrial(active))
        fewer.append(len(active) < len(values))
        assert flat_arch.to_dict() == today.to_dict()
        assert flat_arch.canonical_hash() == today.canonical_hash()
    if space is CONDITIONAL:
        assert any(fewer), "some candidates leave parameters inactive: the comparison is not with itself"


def test_the_hash_ignores_inactive_parameters_and_follows_active_ones() -> None:
    space = CONDITIONAL
    values = _flat_values(space, 0)
    one_stage = {**values, "network.stages": 1, "head.dense_layers": 0, "train.optimizer": "adamw"}
    base = sample_flat(space, optuna.trial.FixedTrial(one_stage)).canonical_hash()
    inactive = {
        "stage2.kernel_size": 5 if one_stage["stage2.kernel_size"] == 3 else 3,
        "stage3.filters": 9 if one_stage["stage3.filters"] != 9 else 10,
        "head.dense_units": 48 - one_stage["head.dense_units"],  # 16 <-> 32
        "train.momentum": 0.8 if one_stage["train.momentum"] != 0.8 else 0.9,
    }
    for name, value in inactive.items():
        changed = sample_flat(space, optuna.trial.FixedTrial({**one_stage, name: value})).canonical_hash()
        assert changed == base, f"{name} is inactive in a 1-stage network without dense layers, on adamw"
    active = {**one_stage, "stage1.kernel_size": 5 if one_stage["stage1.kernel_size"] == 3 else 3}
    assert sample_flat(space, optuna.trial.FixedTrial(active)).canonical_hash() != base
    # The swarm's repeat check keys values by the same hash.
    key = network_key(space)
    assert key(one_stage) == base and key(active) != base
    assert all(key({**one_stage, name: value}) == base for name, value in inactive.items())
    assert key({"network.stages": 1}) is None, "values that do not sample in this space"


@pytest.mark.parametrize("space", ALL_SPACES, ids=IDS)
def test_a_warm_start_queues_active_values_and_the_others_are_drawn(space: SearchSpace) -> None:
    """params_for gives only the active values; a flat trial draws the rest and builds the same network."""
    source = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=4))
    flat = flat_dimensions(space)
    for _ in range(5):
        arch = space.sample(source.ask())
        params = params_for(space, arch)
        assert params is not None
        study.enqueue_trial(params)
        trial = study.ask()
        again = sample_flat(space, trial, epochs=arch.train.epochs)  # as the worker: params_for gives no epochs
        assert again.canonical_hash() == arch.canonical_hash()
        assert set(trial.params) == set(flat) - {"train.epochs"}
        assert {name: trial.params[name] for name in params} == params
        study.tell(trial, 0.0)


@pytest.mark.parametrize("space", ALL_SPACES, ids=IDS)
def test_active_params_are_the_values_the_network_uses(space: SearchSpace) -> None:
    for seed in range(25):
        values = _flat_values(space, seed)
        asked = _Asked(optuna.trial.FixedTrial(values))
        sample_flat(space, asked)
        used = dict.fromkeys(asked.names[len(flat_dimensions(space)) :])  # the second pass: sample_architecture's
        assert active_params(space, values) == {name: values[name] for name in used}
    assert active_params(space, {}) is None
