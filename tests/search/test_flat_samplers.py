"""Each sampler's flat-encoding decision (strategies.FLAT_ENCODING) against what it then models,
on real Optuna studies over the default space (no training: a made-up score per trial)."""

from __future__ import annotations

import logging

import optuna
import pytest

from cnnsearch.search.strategies import FLAT_ENCODING, make_sampler
from cnnsearch.space.flat import flat_dimensions, sample_flat
from cnnsearch.space.parse import SearchSpace, load_space
from cnnsearch.space.sample import sample_architecture

SPACE = load_space("default")
FLAT = flat_dimensions(SPACE, epochs=2)


def _search(
    sampler_name: str, *, flat: bool, trials: int, caplog: pytest.LogCaptureFixture, space: SearchSpace = SPACE
) -> optuna.Study:
    sampler = make_sampler(sampler_name, 0, multi_objective=False, dimensions=flat_dimensions(space, epochs=2))
    if sampler_name == "gp":  # past its 10 random start-up trials in fewer trials
        sampler = optuna.samplers.GPSampler(seed=0, n_startup_trials=3)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    sample = sample_flat if flat else sample_architecture
    with caplog.at_level(logging.WARNING, logger="optuna"):
        for _ in range(trials):
            trial = study.ask()
            arch = sample(space, trial, epochs=2)
            study.tell(trial, len(arch.layers) / 10 + arch.train.lr)
    return study


def test_the_flat_encoding_is_on_where_it_was_measured_to_help() -> None:
    # gp and pso: measured or needed; tpe, cmaes and nsga2: measured not to help (strategies.py).
    assert FLAT_ENCODING == {"tpe": False, "random": False, "gp": True, "cmaes": False, "pso": True, "nsga2": False}


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


def test_the_swarm_moves_through_every_parameter(caplog: pytest.LogCaptureFixture) -> None:
    study = _search("pso", flat=True, trials=4, caplog=caplog)
    assert set(study.sampler.infer_relative_search_space(study, study.trials[-1])) == set(FLAT)
    assert all(set(trial.params) == set(FLAT) for trial in study.trials)


@pytest.mark.parametrize("space_name", ["default", "sequence"])
def test_cmaes_models_every_numeric_range_of_the_shipped_spaces_without_the_encoding(
    space_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Why CMA-ES goes without it: it models ranges only, and these are in every candidate."""
    space = load_space(space_name)
    flat = flat_dimensions(space, epochs=2)
    numeric = {key for key, dist in flat.items() if not isinstance(dist, optuna.distributions.CategoricalDistribution)}
    study = _search("cmaes", flat=False, trials=8, caplog=caplog, space=space)
    assert set(study.sampler.infer_relative_search_space(study, study.trials[-1])) == numeric
