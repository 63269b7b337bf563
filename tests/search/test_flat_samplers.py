"""Each sampler's flat-encoding decision (strategies.FLAT_ENCODING) against what it then models,
on real Optuna studies over the default space (no training: a made-up score per trial)."""

from __future__ import annotations

import logging

import optuna
import pytest

from cnnsearch.search.strategies import FLAT_ENCODING, make_sampler
from cnnsearch.space.flat import flat_dimensions, sample_flat
from cnnsearch.space.parse import load_space
from cnnsearch.space.sample import sample_architecture

SPACE = load_space("default")
FLAT = flat_dimensions(SPACE, epochs=2)


def _search(sampler_name: str, *, flat: bool, trials: int, caplog: pytest.LogCaptureFixture) -> optuna.Study:
    sampler = make_sampler(sampler_name, 0, multi_objective=False, dimensions=FLAT)
    if sampler_name == "gp":  # past its 10 random start-up trials in fewer trials
        sampler = optuna.samplers.GPSampler(seed=0, n_startup_trials=3)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    sample = sample_flat if flat else sample_architecture
    with caplog.at_level(logging.WARNING, logger="optuna"):
        for _ in range(trials):
            trial = study.ask()
            arch = sample(SPACE, trial, epochs=2)
            study.tell(trial, len(arch.layers) / 10 + arch.train.lr)
    return study


def test_the_flat_encoding_is_on_for_the_relative_samplers_only() -> None:
    assert FLAT_ENCODING == {"tpe": False, "random": False, "gp": True, "cmaes": True, "pso": True, "nsga2": True}


def test_gp_models_every_parameter_with_the_flat_encoding_and_warns_without(caplog: pytest.LogCaptureFixture) -> None:
    """Without it GP draws the per-stage parameters at random, with Optuna's warning."""
    study = _search("gp", flat=False, trials=5, caplog=caplog)
    assert "dynamic search space is not supported by GPSampler" in caplog.text
    modelled = study.sampler.infer_relative_search_space(study, study.trials[-1])
    assert set(FLAT) - set(modelled)  # e.g. stage3.kernel_size: not in every candidate
    caplog.clear()
    study = _search("gp", flat=True, trials=5, caplog=caplog)
    assert "dynamic search space" not in caplog.text
    assert set(study.sampler.infer_relative_search_space(study, study.trials[-1])) == set(FLAT)


@pytest.mark.parametrize("name", ["cmaes", "nsga2", "pso"])
def test_flat_relative_samplers_model_every_parameter_they_can(name: str, caplog: pytest.LogCaptureFixture) -> None:
    study = _search(name, flat=True, trials=4, caplog=caplog)
    modelled = set(study.sampler.infer_relative_search_space(study, study.trials[-1]))
    numeric = {key for key, dist in FLAT.items() if not isinstance(dist, optuna.distributions.CategoricalDistribution)}
    # CMA-ES has no model of choices: it models every numeric range, the per-stage ones too.
    assert modelled == (numeric if name == "cmaes" else set(FLAT))
    assert all(set(trial.params) == set(FLAT) for trial in study.trials)
