"""Tests for cnnsearch.space.sequence: the sequence form's validation (exact messages, through the
real CLI too), its sampler and the list of every parameter it can ask for, its inverse for
hand-written architectures, and the shipped sequence.toml's feasibility and cost."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from conftest import run_cli
from optuna.trial import FixedTrial
from test_space import quiet_optuna, space_from  # noqa: F401  (quiet_optuna: an autouse fixture)

from cnnsearch.errors import InfeasibleArchitecture, SpaceError
from cnnsearch.space.parse import SearchSpace, load_space
from cnnsearch.space.sample import params_for
from cnnsearch.space.sequence import sequence_dimensions
from cnnsearch.spec import (
    Architecture,
    ConvLayer,
    Head,
    PoolLayer,
    ResidualLayer,
    SeparableLayer,
    TrainSettings,
    forward_flops,
)

REPO = Path(__file__).resolve().parents[2]
SEQUENCE = REPO / "search_spaces" / "sequence.toml"


def problems(text: str) -> list[str]:
    with pytest.raises(SpaceError) as caught:
        space_from(text)
    return [line.removeprefix("s.toml: ") for line in str(caught.value).splitlines()]


def study_trials(space: SearchSpace, n: int, *, seed: int = 0) -> list[tuple[dict, Architecture]]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    drawn = []
    for _ in range(n):
        trial = study.ask()
        arch = space.sample(trial)
        study.tell(trial, 0.0)
        drawn.append((trial.params, arch))
    return drawn


# ---- validation -------------------------------------------------------------------------
BROKEN = """\
[sequence]
layers = 0
kinds = ["conv", "pool", "dense"]

[conv]
filters = [16, 32]

[residual]
filters = 32
stride = [1, 2]

[pool]
window = 2
filters = 8
"""
BROKEN_PROBLEMS = [
    "[sequence] layers: 0 positions: a sequence needs at least 1 layer position, e.g. layers = { low = 2, high = 6 }",
    "[sequence] kinds: 'dense' is not one of 'conv', 'pool', 'residual', 'separable'",
    "[pool] filters: unknown key",
    "[residual] filters: residual is not one of [sequence] kinds (conv, pool, dense); add 'residual' to kinds "
    "or drop [residual]",
    "[residual] stride: residual is not one of [sequence] kinds (conv, pool, dense); add 'residual' to kinds "
    "or drop [residual]",
]


def test_a_broken_sequence_file_reports_every_problem_with_its_place() -> None:
    assert problems(BROKEN) == BROKEN_PROBLEMS


def test_a_broken_sequence_file_exits_2_through_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(BROKEN)
    for command in ("check", "show", "sample"):
        result = run_cli("space", command, str(path))
        assert result.returncode == 2, result.stderr
        assert result.stderr.splitlines() == [
            ("error: " if index == 0 else "") + f"{path}: {problem}" for index, problem in enumerate(BROKEN_PROBLEMS)
        ]
        assert result.stdout == ""


def test_a_zero_position_range_and_the_two_forms_mixed_are_refused() -> None:
    assert problems("[sequence]\nlayers = { low = 0, high = 3 }\n[network]\nstages = 2\n[stage]\nconvs = 1\n") == [
        "[sequence] layers: low: 0 positions: a sequence needs at least 1 layer position, e.g. layers = "
        "{ low = 2, high = 6 }",
        "[network]: a table of the stage form, but [sequence] makes this file the sequence form; a space uses one "
        "form: drop [network], or drop [sequence] and the layer-kind tables",
        "[stage]: a table of the stage form, but [sequence] makes this file the sequence form; a space uses one "
        "form: drop [stage], or drop [sequence] and the layer-kind tables",
    ]
    assert problems("[network]\nstages = 2\n[residual]\nfilters = 8\n") == [
        "[residual]: a table of the sequence form; add [sequence] with kinds = [...] and drop [network] and [stage] "
        "to use it, or drop [residual]"
    ]
    assert problems("[sequence]\nkinds = 'conv'\n[conv]\nkernel_size = 4\nfiltres = 8\n[seperable]\n") == [
        "[conv] kernel_size: 4 is even; use odd sizes",
        "[conv] filtres: unknown key; did you mean 'filters'?",
        "[seperable]: unknown table; did you mean 'separable'?; valid tables: sequence, conv, pool, residual, "
        "separable, head, train, augment, constraints",
    ]


def test_kinds_default_to_conv_and_settings_to_the_spec() -> None:
    space = space_from("[sequence]\nlayers = 2\n")
    assert space.form == "sequence" and space.kinds() == ("conv",)
    arch = space.sample(FixedTrial({}))
    assert arch.layers == (ConvLayer(32, 3), ConvLayer(32, 3))


# ---- sampling -----------------------------------------------------------------------------
def test_each_position_asks_only_for_the_settings_of_its_kind() -> None:
    drawn = study_trials(load_space(SEQUENCE), 200)
    for params, arch in drawn:
        assert len(arch.layers) == params["sequence.layers"]
        for position, layer in enumerate(arch.layers, start=1):
            assert params[f"layer{position}.kind"] == layer.kind
        for name in params:
            if name.startswith("layer") and not name.endswith(".kind"):
                position, kind, _ = name.split(".")
                assert params[f"{position}.kind"] == kind, name
                assert int(position.removeprefix("layer")) <= params["sequence.layers"], name
        assert [name for name in params if name.startswith("head.dense") and name.endswith(".units")] == [
            f"head.dense{index}.units" for index in range(1, len(arch.head.dense) + 1)
        ]
    assert any(len(set(arch.head.dense)) == 2 for _, arch in drawn)  # each dense layer its own width
    strided = {
        position
        for _, arch in drawn
        for position, layer in enumerate(arch.layers)
        if isinstance(layer, ConvLayer) and layer.stride == 2
    }
    assert strided == set(range(6))  # a strided conv at every position


def test_sequence_dimensions_lists_every_name_a_sample_asks_for() -> None:
    space = load_space(SEQUENCE)
    dims = sequence_dimensions(space)
    assert {name for name in dims if name.endswith(".kind")} == {f"layer{i}.kind" for i in range(1, 7)}
    assert {name for name in dims if name.startswith("layer6.")} == {
        "layer6.kind",
        *(f"layer6.conv.{key}" for key in ("filters", "kernel_size", "stride", "activation")),
        "layer6.pool.pool_type",
        *(f"layer6.residual.{key}" for key in ("filters", "stride", "activation")),
        *(f"layer6.separable.{key}" for key in ("filters", "kernel_size", "stride", "activation")),
    }
    assert "head.dense2.units" in dims and "head.dense3.units" not in dims
    assert "train.momentum" not in dims  # adamw only: never asked
    asked: set[str] = set()
    for params, _ in study_trials(space, 200, seed=1):
        for name, value in params.items():
            assert name in dims, name
            dim = dims[name]
            assert value in dim.choices if dim.kind == "choice" else dim.low <= value <= dim.high, name
        asked |= set(params)
    assert asked == set(dims)  # and every listed name is asked by some sample


def test_sequence_dimensions_needs_the_sequence_form() -> None:
    with pytest.raises(ValueError, match="uses the stages form"):
        sequence_dimensions(load_space(REPO / "search_spaces" / "tiny.toml"))


# ---- the inverse ------------------------------------------------------------------------
def hand_written(layers: tuple) -> Architecture:
    return Architecture(
        layers=layers,
        head=Head(dense=(128, 64), dropout=0.2),
        train=TrainSettings(lr=0.005, weight_decay=1e-4, batch_size=64, epochs=1),
    )


@pytest.mark.parametrize(
    "layers",
    [
        (PoolLayer("max"), ConvLayer(16, 3), ResidualLayer(32, 3, stride=2)),
        (ConvLayer(32, 5, stride=2), PoolLayer("avg"), PoolLayer("max"), SeparableLayer(64, 3, activation="silu")),
    ],
    ids=["pool-first", "pool-pool"],
)
def test_params_for_inverts_a_hand_written_sequence(layers: tuple) -> None:
    space = load_space(SEQUENCE)
    arch = hand_written(layers)
    params = params_for(space, arch)
    assert params is not None
    assert space.sample(FixedTrial(params), epochs=1) == arch
    assert params["layer1.kind"] == layers[0].kind and params["head.dense2.units"] == 64


def test_params_for_refuses_what_the_sequence_space_cannot_say() -> None:
    space = load_space(SEQUENCE)
    assert params_for(space, hand_written((ConvLayer(24, 3),) * 3)) is None  # 24 filters is not a choice
    assert params_for(space, hand_written((ConvLayer(16, 3),) * 7)) is None  # 7 positions, at most 6
    assert params_for(space, hand_written((ResidualLayer(16, 5),) * 3)) is None  # residual kernel is fixed at 3


# ---- the shipped space ------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)], ids=["28x28", "32x32"])
def test_sequence_space_is_mostly_feasible_and_cheap(shape: tuple[int, int, int]) -> None:
    flops, infeasible = [], 0
    for _, arch in study_trials(load_space(SEQUENCE), 300, seed=2):
        try:
            flops.append(forward_flops(arch, shape, 10))
        except InfeasibleArchitecture:
            infeasible += 1
    assert infeasible / 300 < 0.10
    assert sum(value < 60e6 for value in flops) / len(flops) > 0.8  # a 10-minute CPU search trains many


def test_space_show_draws_the_form_of_each_file() -> None:
    shown = {name: run_cli("space", "show", name) for name in ("sequence", "default")}
    assert shown["sequence"].stdout.splitlines()[0] == (
        "form: sequence   input -> layer1 -> ... -> layerN -> head   "
        "(N: 3 .. 6; each layer: conv | pool | residual | separable)"
    )
    assert "layer<i>.residual.stride" in shown["sequence"].stdout
    assert "head.dense<i>.units" in shown["sequence"].stdout
    assert shown["default"].stdout.splitlines()[0] == (
        "form: stages   input -> stage1 -> ... -> stageN -> head   (N: 1 .. 3; each stage: 1+ convs, then maybe a pool)"
    )
