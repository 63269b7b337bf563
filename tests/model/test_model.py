"""Tests for cnnsearch.model: every sampled candidate of every shipped space builds and runs on
tiny inputs, torch agrees with the spec's shape arithmetic, and FLOPs are counted."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import optuna
import pytest
import torch
from torch import nn

from cnnsearch.errors import InfeasibleArchitecture
from cnnsearch.model.build import build_model, count_flops
from cnnsearch.model.layers import ACTIVATION_LAYERS, POOL_LAYERS, activation_layer
from cnnsearch.space.parse import load_space
from cnnsearch.spec import Architecture, ConvLayer, Head, PoolLayer, count_params, forward_flops, layer_table

SPACE_DIR = Path(__file__).resolve().parents[2] / "search_spaces"
SPACE_NAMES = ("default", "tiny", "cifar")
SHAPES = ((1, 8, 8), (1, 28, 28), (3, 32, 32))
INTENDED = (("default", (1, 8, 8)), ("default", (1, 28, 28)), ("tiny", (1, 8, 8)), ("cifar", (3, 32, 32)))
N_CANDIDATES = 150
NUM_CLASSES = 10
LAYER_ENDS = tuple(ACTIVATION_LAYERS.values()) + tuple(POOL_LAYERS.values())  # a conv block ends in its activation


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Batches of 2 gain nothing from more threads, and on a busy machine threads wait on each other.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@cache
def candidates(space_name: str) -> tuple[Architecture, ...]:
    """The same seeded draw for every input shape: sampling does not depend on the image size."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(SPACE_DIR / f"{space_name}.toml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    archs = []
    for _ in range(N_CANDIDATES):
        trial = study.ask()
        archs.append(space.sample(trial))
        study.tell(trial, 0.0)
    return tuple(archs)


def run_layer_by_layer(net: nn.Module, x: torch.Tensor) -> tuple[list[tuple[int, ...]], torch.Tensor]:
    """Output shape (without the batch) after each spec layer, and the logits."""
    shapes = []
    with torch.no_grad():
        for module in net.features:
            x = module(x)
            if isinstance(module, LAYER_ENDS):
                shapes.append(tuple(x.shape[1:]))
        return shapes, net.head(x)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: "x".join(map(str, shape)))
@pytest.mark.parametrize("space_name", SPACE_NAMES)
def test_every_sampled_candidate_builds_and_runs(space_name: str, shape: tuple[int, int, int]) -> None:
    generator = torch.Generator().manual_seed(0)
    infeasible = []
    for arch in candidates(space_name):
        try:
            rows = layer_table(arch, shape, NUM_CLASSES)
        except InfeasibleArchitecture as error:
            infeasible.append(str(error))
            with pytest.raises(InfeasibleArchitecture):
                build_model(arch, shape, NUM_CLASSES)
            continue
        net = build_model(arch, shape, NUM_CLASSES).eval()
        shapes, logits = run_layer_by_layer(net, torch.randn(2, *shape, generator=generator))
        assert shapes == [row.output_shape for row in rows[: len(arch.layers)]], arch.compact()
        assert logits.shape == (2, NUM_CLASSES), arch.compact()
        assert torch.isfinite(logits).all(), arch.compact()
        assert count_params(arch, shape, NUM_CLASSES) == sum(p.numel() for p in net.parameters()), arch.compact()
    assert len(infeasible) < N_CANDIDATES  # most candidates fit every size tested here


@pytest.mark.parametrize("space_name, shape", INTENDED, ids=[f"{name}-{'x'.join(map(str, s))}" for name, s in INTENDED])
def test_few_candidates_are_shape_infeasible_at_the_intended_sizes(
    space_name: str, shape: tuple[int, int, int]
) -> None:
    infeasible = 0
    for arch in candidates(space_name):
        try:
            layer_table(arch, shape, NUM_CLASSES)
        except InfeasibleArchitecture:
            infeasible += 1
    assert infeasible / N_CANDIDATES < 0.05


def test_hand_built_model_matches_its_layer_table_in_train_mode() -> None:
    arch = Architecture(
        layers=(
            ConvLayer(8, 3),
            ConvLayer(16, 5, padding="valid", activation="gelu", batch_norm=False),
            PoolLayer("max", 3, 2),
            ConvLayer(16, 3, stride=2, activation="silu"),  # same padding at stride 2 on an odd size (11)
            ConvLayer(32, 3, stride=2, padding="valid", activation="elu"),
            PoolLayer("avg", 2, 1),
        ),
        head=Head(pooling="flatten", dense=(64, 32), dropout=0.2, activation="gelu"),
    )
    rows = layer_table(arch, (1, 28, 28), 7)
    net = build_model(arch, (1, 28, 28), 7)
    assert net.training
    shapes, logits = run_layer_by_layer(net, torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1)))
    assert shapes == [(8, 28, 28), (16, 24, 24), (16, 11, 11), (16, 6, 6), (32, 2, 2), (32, 1, 1)]
    assert shapes == [row.output_shape for row in rows[:6]]
    assert logits.shape == (2, 7)
    assert sum(p.numel() for p in net.parameters()) == sum(row.params for row in rows)
    assert sum(isinstance(module, nn.Dropout) for module in net.head) == 3  # before each dense layer and the classifier
    assert [module.bias is None for module in net.features if isinstance(module, nn.Conv2d)] == [
        True,
        False,
        True,
        True,
    ]


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 9, 7)], ids=["8x8", "9x7"])
def test_same_padding_at_stride_2_matches_the_table_down_to_1x1(shape: tuple[int, int, int]) -> None:
    arch = Architecture(layers=(ConvLayer(4, 7, stride=2), ConvLayer(4, 5, stride=2, batch_norm=False)) * 3)
    net = build_model(arch, shape, 10).eval()
    shapes, logits = run_layer_by_layer(net, torch.randn(2, *shape, generator=torch.Generator().manual_seed(2)))
    assert shapes == [row.output_shape for row in layer_table(arch, shape, 10)[:6]]
    assert shapes[-1] == (4, 1, 1) and logits.shape == (2, 10)


def test_build_model_refuses_an_infeasible_architecture() -> None:
    arch = Architecture(layers=(ConvLayer(8, 3), PoolLayer()) * 4)
    with pytest.raises(InfeasibleArchitecture, match="^pool4: window 2x2 is larger than its 1x1 input$"):
        build_model(arch, (1, 8, 8), 10)


def test_count_flops_exact_for_a_small_net() -> None:
    arch = Architecture(layers=(ConvLayer(8, 3, stride=2),), head=Head(dense=(16,)))
    net = build_model(arch, (1, 8, 8), 10)
    # conv: 2 * (4 * 4 outputs) * (1 * 8 channels) * 3 * 3; dense: 2 * 8 * 16; classifier: 2 * 16 * 10
    assert count_flops(net, (1, 8, 8)) == 2 * 16 * 8 * 9 + 2 * 8 * 16 + 2 * 16 * 10


@pytest.mark.parametrize("space_name, shape", INTENDED)
def test_forward_flops_by_arithmetic_equals_torchs_counter(space_name: str, shape: tuple[int, int, int]) -> None:
    checked = 0
    for arch in candidates(space_name)[:40]:
        try:
            net = build_model(arch, shape, NUM_CLASSES)
        except InfeasibleArchitecture:
            continue
        assert forward_flops(arch, shape, NUM_CLASSES) == count_flops(net, shape), arch.compact()
        checked += 1
    strided = Architecture(
        layers=(ConvLayer(8, 5, stride=2, padding="same"), ConvLayer(8, 3, padding="valid")),
        head=Head("flatten", (16,), 0.1),
    )
    assert forward_flops(strided, (3, 9, 9), 4) == count_flops(build_model(strided, (3, 9, 9), 4), (3, 9, 9))
    assert checked >= 20


def test_count_flops_positive_grows_with_filters_and_keeps_the_mode() -> None:
    def flops(filters: int) -> int:
        arch = Architecture(layers=(ConvLayer(filters, 3), PoolLayer(), ConvLayer(2 * filters, 3)))
        net = build_model(arch, (1, 28, 28), 10)
        result = count_flops(net, (1, 28, 28))
        assert net.training  # measured in eval mode, handed back as it came
        return result

    small, large = flops(8), flops(16)
    assert 0 < small < large


def test_unknown_activation_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError) as caught:
        activation_layer("relux")
    assert str(caught.value) == "unknown activation 'relux'; valid: relu, gelu, silu, elu"
