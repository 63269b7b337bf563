"""The sampler and its inverse (space/sample.py) over every shipped space."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from cnnsearch.space.parse import load_space
from cnnsearch.space.sample import params_for

SPACES = sorted((Path(__file__).resolve().parents[2] / "search_spaces").glob("*.toml"))


@pytest.mark.parametrize("path", SPACES, ids=[path.stem for path in SPACES])
def test_params_for_inverts_sample_on_every_shipped_space(path: Path) -> None:
    """Warm start queues `params_for(arch)`: a renamed parameter would silently drop candidates."""
    space = load_space(path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(40):
        trial = study.ask()
        arch = space.sample(trial)
        params = params_for(space, arch)
        assert params is not None, f"{path.name}: {arch.compact()} has no parameters that sample to it"
        again = space.sample(optuna.trial.FixedTrial(params))
        assert again.canonical_hash() == arch.canonical_hash(), f"{path.name}: {arch.compact()}"
        study.tell(trial, 0.0)
