"""Tests for cnnsearch.model's residual and separable blocks: hundreds of random candidates of the
sequence space at 8x8, 28x28 and 32x32 build and run with the predicted shapes, parameter counts
and FLOPs (held against torch.utils.flop_counter), or are refused before anything is built."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import optuna
import pytest
import torch
from test_model import one_thread  # noqa: F401  (an autouse fixture: one torch thread)
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnsearch.errors import InfeasibleArchitecture
from cnnsearch.model.build import build_model, count_flops
from cnnsearch.model.layers import ACTIVATION_LAYERS, POOL_LAYERS, ResidualBlock
from cnnsearch.space.parse import load_space
from cnnsearch.spec import Architecture, ConvLayer, PoolLayer, ResidualLayer, SeparableLayer, forward_flops, layer_table

SEQUENCE = Path(__file__).resolve().parents[2] / "search_spaces" / "sequence.toml"
N_CANDIDATES = 200
NUM_CLASSES = 10
# Every spec layer ends in one of these modules (a residual block is one module).
LAYER_ENDS = (*ACTIVATION_LAYERS.values(), *POOL_LAYERS.values(), ResidualBlock)
REASONS = re.compile(
    r"^(pool|sep|conv)\d+: (window \d+x\d+|kernel \d+x\d+) is larger than its \d+x\d+ input$"
    r"|^(pool|sep|conv)\d+: the feature map shrinks below 1x1$"
)


@cache
def candidates() -> tuple[Architecture, ...]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(SEQUENCE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    archs = []
    for _ in range(N_CANDIDATES):
        trial = study.ask()
        archs.append(space.sample(trial))
        study.tell(trial, 0.0)
    return tuple(archs)


def counted_run(net: nn.Module, x: torch.Tensor) -> tuple[list[tuple[int, ...]], torch.Tensor, int]:
    """Output shape after each spec layer, the logits, and the FLOPs torch's counter counts per image."""
    shapes = []
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        for module in net.features:
            x = module(x)
            if isinstance(module, LAYER_ENDS):
                shapes.append(tuple(x.shape[1:]))
        logits = net.head(x)
    return shapes, logits, int(counter.get_total_flops()) // x.shape[0]


def test_the_sample_reaches_every_kind_in_many_orders() -> None:
    kinds = {layer.kind for arch in candidates() for layer in arch.layers}
    assert kinds == {"conv", "pool", "residual", "separable"}
    assert sum(arch.layers[0].kind == "pool" for arch in candidates()) > 10
    orders = {tuple(layer.kind for layer in arch.layers) for arch in candidates()}
    assert len(orders) > 100


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)], ids=["8x8", "28x28", "32x32"])
def test_every_sampled_candidate_builds_runs_and_costs_what_the_spec_says(shape: tuple[int, int, int]) -> None:
    generator = torch.Generator().manual_seed(0)
    refused = 0
    for arch in candidates():
        try:
            rows = layer_table(arch, shape, NUM_CLASSES)
        except InfeasibleArchitecture as error:
            assert REASONS.match(str(error)), str(error)  # a reason recorded before training
            with pytest.raises(InfeasibleArchitecture):
                build_model(arch, shape, NUM_CLASSES)
            refused += 1
            continue
        net = build_model(arch, shape, NUM_CLASSES).eval()
        shapes, logits, flops = counted_run(net, torch.randn(2, *shape, generator=generator))
        assert shapes == [row.output_shape for row in rows[: len(arch.layers)]], arch.compact()
        assert logits.shape == (2, NUM_CLASSES) and torch.isfinite(logits).all(), arch.compact()
        assert sum(p.numel() for p in net.parameters()) == sum(row.params for row in rows), arch.compact()
        assert forward_flops(arch, shape, NUM_CLASSES) == flops, arch.compact()
    assert refused < N_CANDIDATES * (0.3 if shape[1] == 8 else 0.1)


def test_residual_block_projects_only_when_width_or_stride_changes() -> None:
    def shortcut(arch: Architecture) -> nn.Module:
        net = build_model(arch, (3, 9, 9), 4)
        (block,) = [module for module in net.features if isinstance(module, ResidualBlock)]
        return block.shortcut

    assert isinstance(shortcut(Architecture(layers=(ConvLayer(8, 3), ResidualLayer(8, 3)))), nn.Identity)
    wider = shortcut(Architecture(layers=(ConvLayer(8, 3), ResidualLayer(16, 3))))
    assert [type(module) for module in wider] == [nn.Conv2d, nn.BatchNorm2d]
    strided = shortcut(Architecture(layers=(ConvLayer(8, 3), ResidualLayer(8, 3, stride=2, batch_norm=False))))
    assert [type(module) for module in strided] == [nn.Conv2d] and strided[0].bias is not None


def test_the_skip_connection_adds_the_input() -> None:
    """With the body's last batch norm zeroed, a residual block is activation(input)."""
    net = build_model(Architecture(layers=(ResidualLayer(1, 3),)), (1, 5, 5), 2).eval()
    block = net.features[0]
    nn.init.zeros_(block.body[-1].weight)
    nn.init.zeros_(block.body[-1].bias)
    x = torch.randn(2, 1, 5, 5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(block(x), torch.relu(x))


def test_separable_block_is_depthwise_then_pointwise() -> None:
    net = build_model(Architecture(layers=(ConvLayer(8, 3), SeparableLayer(16, 5, stride=2))), (1, 9, 9), 3)
    convs = [module for module in net.features if isinstance(module, nn.Conv2d)][1:]
    assert [(conv.groups, conv.kernel_size, conv.out_channels) for conv in convs] == [(8, (5, 5), 8), (1, (1, 1), 16)]
    assert convs[0].bias is None and convs[1].bias is None  # batch norm follows the pointwise conv
    arch = Architecture(layers=(PoolLayer(), ResidualLayer(8, 3, stride=2), SeparableLayer(8, 3, stride=2)))
    assert forward_flops(arch, (3, 13, 11), 5) == count_flops(build_model(arch, (3, 13, 11), 5), (3, 13, 11))
