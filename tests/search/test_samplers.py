"""Every offered sampler runs a pruned two-worker search inside the space; a missing engine is refused up front."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import TINY_SPACE, load_study, run_cli

from cnnsearch.errors import UserError
from cnnsearch.search import strategies
from cnnsearch.search.progress import counted_trials
from cnnsearch.search.settings import SearchSettings
from cnnsearch.search.setup import prepare_run
from cnnsearch.search.strategies import FLAT_ENCODING, SAMPLERS
from cnnsearch.space.flat import flat_dimensions
from cnnsearch.space.parse import load_space


def _inside(distribution: Any, value: Any) -> bool:
    """Whether `value` is one the distribution can give (on its grid, within its bounds)."""
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return value in distribution.choices
    offset = (value - distribution.low) / (distribution.step or 1)
    return distribution.low <= value <= distribution.high and (
        not distribution.step or abs(offset - round(offset)) < 1e-8
    )


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_runs_a_pruned_two_worker_search_inside_the_space(sampler: str, runs_dir: Path) -> None:
    result = run_cli(
        "search", "--space", str(TINY_SPACE), "--data", "digits", "--name", sampler, "--trials", "6", "--epochs", "2",
        "--sampler", sampler, "--pruner", "asha", "--workers", "2", "--device", "cpu", "--runs-dir", str(runs_dir),
        "--subset", "400",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    study = load_study(runs_dir, sampler)
    assert len(counted_trials(study)) == 6
    outcomes = [trial.user_attrs.get("outcome") for trial in study.trials]
    assert "error" not in outcomes, [trial.user_attrs.get("reason") for trial in study.trials]
    assert "complete" in outcomes, outcomes
    assert len({trial.user_attrs["worker"] for trial in study.trials}) == 2
    space = load_space(TINY_SPACE)
    flat = flat_dimensions(space, epochs=2)
    for trial in study.trials:
        assert all(_inside(flat[name], value) for name, value in trial.params.items()), trial.params
        # The stored network is the one its parameters sample to (the flat ones: their active part).
        assert (
            space.sample(optuna.trial.FixedTrial(trial.params), epochs=2).canonical_hash() == trial.user_attrs["hash"]
        )
        if FLAT_ENCODING[sampler]:
            assert set(trial.params) == set(flat)


def test_a_sampler_whose_package_is_missing_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The table of what each sampler needs, pointed at a package that cannot exist.
    monkeypatch.setitem(strategies.SAMPLER_NEEDS, "cmaes", (("cnnsearch_no_such_module", "cmaes"),))
    settings = SearchSettings(name="c", space=str(TINY_SPACE), data="digits", runs_dir=str(tmp_path), sampler="cmaes")
    with pytest.raises(UserError) as caught:
        prepare_run(settings)
    assert str(caught.value) == (
        "--sampler cmaes needs cmaes, which is not installed; pip install cmaes, or choose another --sampler"
    )
    assert not list(tmp_path.iterdir())


def test_cmaes_fallback_warnings_go_to_the_run_log_not_the_terminal(runs_dir: Path) -> None:
    result = run_cli(
        "search", "--space", str(TINY_SPACE), "--data", "digits", "--name", "cm", "--trials", "3", "--epochs", "1",
        "--sampler", "cmaes", "--device", "cpu", "--runs-dir", str(runs_dir),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "sampled independently" not in result.stderr + result.stdout
    assert "sampled independently" in (runs_dir / "cm" / "search.log").read_text()
