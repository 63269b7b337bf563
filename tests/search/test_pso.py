"""The swarm (search/pso.py) on real Optuna studies: its coordinates, its moves, its state kept in
the study (several workers, a fresh process), and what it learns from pruned trials."""

from __future__ import annotations

import os
import signal
import time
from io import StringIO
from typing import Any

import numpy as np
import optuna
import pytest
from conftest import TINY_SPACE, load_study, run_cli, start_cli
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from rich.console import Console

from cnnsearch.errors import UserError
from cnnsearch.results.detail import trial_detail
from cnnsearch.run.folder import RunDir
from cnnsearch.search.pso import STATE_KEY, SWARM_SIZE, SwarmSampler, decode, encode
from cnnsearch.search.settings import SearchSettings
from cnnsearch.search.setup import prepare_run
from cnnsearch.space.flat import active_params, flat_dimensions, sample_flat, suggest
from cnnsearch.space.parse import load_space
from cnnsearch.space.sample import params_for

DISTRIBUTIONS = {
    "choice": CategoricalDistribution(["relu", "gelu", "silu"]),
    "flag": CategoricalDistribution([True, False]),
    "int": IntDistribution(1, 4),
    "int_step": IntDistribution(8, 64, step=8),
    "int_log": IntDistribution(8, 512, log=True),
    "float": FloatDistribution(0.0, 0.5),
    "float_edge": FloatDistribution(0.03, 0.3),  # low + 1.0 * (high - low) is 0.30000000000000004
    "float_step": FloatDistribution(0.0, 0.4, step=0.1),
    "float_log": FloatDistribution(1e-4, 1e-1, log=True),
}


def inside(distribution: Any, value: Any) -> bool:
    """Whether `value` is one the distribution can give (on its grid, within its bounds)."""
    if isinstance(distribution, CategoricalDistribution):
        return value in distribution.choices
    if not distribution.low <= value <= distribution.high:
        return False
    step = distribution.step
    return step is None or abs((value - distribution.low) / step - round((value - distribution.low) / step)) < 1e-8


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_every_coordinate_decodes_inside_the_distribution_and_values_round_trip(name: str) -> None:
    distribution = DISTRIBUTIONS[name]
    for u in np.linspace(0.0, 1.0, 201):
        value = decode(distribution, float(u))
        assert inside(distribution, value), (name, u, value)
        assert 0.0 <= encode(distribution, value) <= 1.0
        assert decode(distribution, encode(distribution, value)) == pytest.approx(value)
    if isinstance(distribution, CategoricalDistribution) or (distribution.step is not None and not distribution.log):
        # Equal bins: every value of a discrete parameter is reachable, the ends too.
        hit = {decode(distribution, float(u)) for u in np.linspace(0.0, 1.0, 1001)}
        count = len(distribution.choices) if isinstance(distribution, CategoricalDistribution) else None
        assert len(hit) == (count or round((distribution.high - distribution.low) / distribution.step) + 1)


def _score(params: dict[str, Any]) -> float:
    """A smooth objective with its best at int=3, float=0.4, choice=silu."""
    return -((params["int"] - 3) ** 2) - 10 * (params["float"] - 0.4) ** 2 + (params["choice"] == "silu")


def _swarm(seed: int = 0, **kwargs: Any) -> SwarmSampler:
    return SwarmSampler(DISTRIBUTIONS, seed=seed, **kwargs)


def _ask_and_tell(study: optuna.Study) -> optuna.Trial:
    trial = study.ask()
    for name, distribution in DISTRIBUTIONS.items():
        suggest(trial, name, distribution)
    study.tell(trial, _score(trial.params))
    return trial


def _state(trial: Any) -> dict[str, Any]:
    return trial.system_attrs[STATE_KEY]


def test_two_workers_share_one_swarm_and_a_fresh_process_continues_it(tmp_path) -> None:
    """Particles are trial n mod swarm size; every worker and every restart rebuilds them from the
    study, so iterations continue and each move starts from the particle's last stored state."""
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.log")))
    optuna.create_study(study_name="s", storage=storage, direction="maximize")
    workers = [optuna.load_study(study_name="s", storage=storage, sampler=_swarm(seed)) for seed in (1, 2)]
    for number in range(9):
        _ask_and_tell(workers[number % 2])
    # A new process (new sampler, nothing in memory) joins the same study.
    fresh = optuna.load_study(study_name="s", storage=storage, sampler=_swarm(3))
    for _ in range(6):
        _ask_and_tell(fresh)
    trials = fresh.get_trials()
    assert [_state(t)["particle"] for t in trials] == [n % 5 for n in range(15)]
    assert [_state(t)["iteration"] for t in trials] == [n // 5 for n in range(15)]
    names = sorted(DISTRIBUTIONS)
    for trial in trials:
        assert all(inside(DISTRIBUTIONS[name], value) for name, value in trial.params.items())
        if _state(trial)["iteration"] == 0:
            continue
        last = trials[trial.number - 5]
        x_last = np.array([_state(last)["x"][name] for name in names])
        x, v = (np.array([_state(trial)[key][name] for name in names]) for key in ("x", "v"))
        assert np.all(np.abs(v) <= 0.3 + 1e-12)
        # The new position is the last one plus the velocity, but where a wall stopped it (speed 0
        # there) and a coordinate shaken off a position that repeats an earlier trial (a few).
        walled = (v == 0.0) & ((x == 0.0) | (x == 1.0))
        assert np.sum(~np.isclose(x_last + v, x) & ~walled) <= 3, trial.number


def test_same_seed_and_history_give_the_same_move() -> None:
    studies = []
    for _ in range(2):
        study = optuna.create_study(direction="maximize", sampler=_swarm(7))
        for _ in range(8):
            _ask_and_tell(study)
        studies.append(study)
    assert [t.params for t in studies[0].trials] == [t.params for t in studies[1].trials]


def test_pruned_trials_are_bad_positions_and_failed_ones_are_ignored() -> None:
    """Without inertia or the personal pull a particle moves straight at the swarm best, which
    must be the best COMPLETE trial: not a pruned one with a higher accuracy at epoch 1, nor a
    pruned one with no epoch (infeasible), nor a FAIL one."""
    swarm = SwarmSampler(DISTRIBUTIONS, seed=0, swarm_size=4, inertia=0.0, cognitive=0.0, social=1.0, max_speed=1.0)
    study = optuna.create_study(direction="maximize", sampler=swarm)
    corners = {
        "complete": {name: decode(dist, 0.95) for name, dist in DISTRIBUTIONS.items()},
        "pruned": {name: decode(dist, 0.05) for name, dist in DISTRIBUTIONS.items()},
        "infeasible": {name: decode(dist, 0.3) for name, dist in DISTRIBUTIONS.items()},
        # At the far wall: were a FAIL trial taken as the swarm best, the others would turn towards 0.
        "failed": {name: decode(dist, 0.0) for name, dist in DISTRIBUTIONS.items()},
    }
    for params in corners.values():
        study.enqueue_trial(params)
    ends = {"complete": 0.5, "pruned": TrialState.PRUNED, "infeasible": TrialState.PRUNED, "failed": TrialState.FAIL}
    for outcome, end in ends.items():
        trial = study.ask()
        for name, distribution in DISTRIBUTIONS.items():
            suggest(trial, name, distribution)
        if outcome == "pruned":
            trial.report(0.99, 1)  # better than the complete one, but only at epoch 1
        if end is TrialState.PRUNED or end is TrialState.FAIL:
            study.tell(trial, state=end)
        else:
            study.tell(trial, end)
    target = np.array([encode(dist, corners["complete"][name]) for name, dist in sorted(DISTRIBUTIONS.items())])
    for _ in range(4):  # each particle's next move, from where it stood
        trial = study.ask()
        for name, distribution in DISTRIBUTIONS.items():
            suggest(trial, name, distribution)
        state = study.get_trials(deepcopy=False)[-1].system_attrs[STATE_KEY]
        last = study.trials[trial.number - 4]
        x_last = np.array([encode(dist, last.params[name]) for name, dist in sorted(DISTRIBUTIONS.items())])
        v = np.array([state["v"][name] for name in sorted(DISTRIBUTIONS)])
        toward = np.sign(target - x_last)
        assert np.all((np.sign(v) == toward) | (v == 0.0) | (toward == 0.0)), last.number
        study.tell(trial, 0.0)


def test_a_rerun_of_an_interrupted_trial_moves_the_particle_of_the_trial_it_reruns() -> None:
    """Trial 3 is interrupted and re-run as trial 5 (origin 3, as liveness.requeue queues it): trial
    5 is particle 3's second position, not particle 0's, so trial 8 is particle 3's third move and
    trial 10 particle 0's second."""
    study = optuna.create_study(direction="maximize", sampler=_swarm(0))
    for number in range(5):
        trial = study.ask()
        trial.set_user_attr("origin", number)
        for name, distribution in DISTRIBUTIONS.items():
            suggest(trial, name, distribution)
        if number == 3:
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, _score(trial.params))
    study.enqueue_trial(dict(study.trials[3].params), user_attrs={"origin": 3, "resume_of": 3})
    for _ in range(6):  # trial 5 (the re-run) to trial 10
        _ask_and_tell(study)
    trials = study.trials
    assert trials[5].params == trials[3].params and trials[5].user_attrs["origin"] == 3
    assert (_state(trials[8])["particle"], _state(trials[8])["iteration"]) == (3, 2)
    assert (_state(trials[10])["particle"], _state(trials[10])["iteration"]) == (0, 1)


def test_a_position_repeating_an_earlier_network_is_shaken_even_where_unused_values_differ() -> None:
    """A swarm that barely moves (speed 1e-6) proposes the same discrete values again with plain
    floats a hair apart: a new trial by its values, the same network by `same_network` (here the
    discrete values), so it is shaken until the network differs."""
    discrete = [name for name, dist in DISTRIBUTIONS.items() if not isinstance(dist, FloatDistribution) or dist.step]

    def network(params: dict[str, Any]) -> tuple:
        return tuple(params.get(name) for name in discrete)

    for same_network, shaken in ((None, False), (network, True)):
        swarm = SwarmSampler(DISTRIBUTIONS, seed=3, swarm_size=1, max_speed=1e-6, same_network=same_network)
        study = optuna.create_study(direction="maximize", sampler=swarm)
        first, second = _ask_and_tell(study), _ask_and_tell(study)
        assert first.params != second.params
        assert (network(first.params) != network(second.params)) == shaken


def test_bad_settings_are_refused_where_they_enter() -> None:
    with pytest.raises(ValueError, match="swarm_size >= 1 must hold, but got swarm_size=0"):
        SwarmSampler(DISTRIBUTIONS, swarm_size=0)
    with pytest.raises(ValueError, match="0 < max_speed <= 1 must hold, but got max_speed=2"):
        SwarmSampler(DISTRIBUTIONS, max_speed=2)


def test_a_swarm_search_killed_and_resumed_continues_its_swarm(runs_dir) -> None:
    """SIGKILL a `--sampler pso` search once a few trials have finished, resume it: the resumed
    process's trials continue the particles' iterations from the study, not from scratch."""
    search = start_cli(
        "search", "--space", str(TINY_SPACE), "--data", "digits", "--name", "k", "--trials", str(SWARM_SIZE + 2),
        "--epochs", "2", "--sampler", "pso", "--device", "cpu", "--runs-dir", str(runs_dir),
    )  # fmt: skip
    trials_dir = runs_dir / "k" / "trials"
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline and len(list(trials_dir.glob("*.json"))) < 3:
            time.sleep(0.1)
        os.kill(search.pid, signal.SIGKILL)
        search.wait(timeout=30)
    finally:
        if search.poll() is None:
            search.kill()
    before = {t.number: t for t in load_study(runs_dir, "k").trials}
    assert 3 <= len([t for t in before.values() if t.state.is_finished()]) < SWARM_SIZE, "killed too late"
    resumed = run_cli("search", "--name", "k", "--runs-dir", str(runs_dir))
    assert resumed.returncode == 0, resumed.stderr
    trials = load_study(runs_dir, "k").trials
    new = [t for t in trials if t.number not in before and STATE_KEY in t.system_attrs]
    assert {t.user_attrs["worker"] for t in new}.isdisjoint({t.user_attrs.get("worker") for t in before.values()})
    # Particle n mod 5, iteration: its earlier positions, the killed session's included.
    assert [(_state(t)["particle"], _state(t)["iteration"]) for t in new] == [
        (t.number % SWARM_SIZE, t.number // SWARM_SIZE) for t in new
    ]
    assert any(_state(t)["iteration"] >= 1 for t in new)
    for trial in (t for t in new if _state(t)["iteration"] >= 1):
        last = trials[trial.number - SWARM_SIZE]  # proposed by the killed process
        assert last.number in before
        assert _state(last)["x"] != _state(trial)["x"]
    # `show` lists the values the network uses, and names the others on a line of their own.
    for trial in (t for t in trials if t.user_attrs.get("arch")):
        console = Console(file=StringIO(), width=300)
        console.print(trial_detail(RunDir(runs_dir, "k"), trial.number))
        text = console.file.getvalue()
        active = active_params(load_space(TINY_SPACE), trial.params, epochs=2)
        unused = [name for name in trial.params if name not in active]
        assert ("drawn but not used by this network (flat encoding of --sampler pso)" in text) == bool(unused)
        assert all(f"{name}=" in text for name in unused)


def test_a_pareto_swarm_is_refused_before_anything_is_written(tmp_path) -> None:
    settings = SearchSettings(
        name="p", space=str(TINY_SPACE), data="digits", runs_dir=str(tmp_path), sampler="pso",
        objective=("accuracy", "params"),
    )  # fmt: skip
    with pytest.raises(UserError) as caught:
        prepare_run(settings)
    assert str(caught.value) == (
        "--sampler pso optimises one objective; for a Pareto search (--objective with two) choose --sampler nsga2 or tpe"
    )
    assert not list(tmp_path.iterdir())


def test_a_warm_start_candidate_is_trained_as_queued_and_joins_the_swarm() -> None:
    """--enqueue gives only the active values; the swarm draws the rest, and the queued values stand."""
    space = load_space("default")
    flat = flat_dimensions(space, epochs=2)
    study = optuna.create_study(direction="maximize", sampler=SwarmSampler(flat, seed=0))
    source = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
    for _ in range(SWARM_SIZE + 2):
        arch = space.sample(source.ask(), epochs=2)
        params = params_for(space, arch)
        assert params is not None
        study.enqueue_trial(params)
        trial = study.ask()
        assert sample_flat(space, trial, epochs=2).canonical_hash() == arch.canonical_hash()
        assert set(trial.params) == set(flat)
        study.tell(trial, 0.5)
    for trial in study.trials:
        if STATE_KEY in trial.system_attrs:  # the swarm drew its inactive values
            assert (_state(trial)["particle"], _state(trial)["iteration"]) == (
                trial.number % SWARM_SIZE,
                trial.number // SWARM_SIZE,
            )
        else:  # every value was queued (a candidate with every stage): the sampler was never asked
            assert set(trial.system_attrs["fixed_params"]) == set(flat)
    assert sum(STATE_KEY in trial.system_attrs for trial in study.trials) >= 3
