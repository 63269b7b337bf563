"""Tests for cnnsearch.spec's residual and separable layers and per-layer dense widths: compact
form, JSON round trip, hash identity, shape arithmetic and the reasons a candidate is refused."""

from __future__ import annotations

import json

import pytest

from cnnsearch.errors import InfeasibleArchitecture
from cnnsearch.spec import (
    Architecture,
    ConvLayer,
    Head,
    LayerRow,
    PoolLayer,
    ResidualLayer,
    SeparableLayer,
    count_params,
    forward_flops,
    layer_table,
)


def blocks_arch() -> Architecture:
    return Architecture(
        layers=(
            PoolLayer("avg", 2, 2),
            ResidualLayer(32, 3),
            SeparableLayer(64, 3),
            ResidualLayer(64, 5, stride=2, activation="silu"),
            SeparableLayer(48, 5, stride=2, padding="valid", batch_norm=False),
            ConvLayer(16, 3, stride=2),
        ),
        head=Head(dense=(128, 32), dropout=0.1),
    )


def test_compact_names_every_layer_kind() -> None:
    assert blocks_arch().compact() == "ap2-r32k3-s64k3-r64k5s2-s48k5s2v-c16k3s2-gap-fc128-fc32-d0.1 relu/silu+bn"


def test_json_round_trip_and_hash_of_blocks() -> None:
    arch = blocks_arch()
    assert Architecture.from_json(arch.to_json()) == arch
    assert Architecture.from_json(arch.to_json()).canonical_hash() == arch.canonical_hash()
    layers = json.loads(arch.to_json())["layers"]
    assert [layer["kind"] for layer in layers] == ["pool", "residual", "separable", "residual", "separable", "conv"]
    # A residual and a separable layer with the same width and kernel are different networks.
    residual = Architecture(layers=(ResidualLayer(32, 3),))
    separable = Architecture(layers=(SeparableLayer(32, 3),))
    assert residual.canonical_hash() != separable.canonical_hash()
    assert Architecture(layers=(ResidualLayer(32, 3, stride=2),)).canonical_hash() != residual.canonical_hash()


def test_unknown_layer_kind_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError) as caught:
        Architecture.from_dict({"layers": [{"kind": "dense", "filters": 3}]})
    assert str(caught.value) == "unknown layer kind 'dense'; valid kinds: conv, pool, residual, separable"


def test_json_with_one_dense_width_still_loads() -> None:
    old = {"layers": [{"kind": "conv", "filters": 8, "kernel_size": 3}], "head": {"dense_layers": 2, "dense_units": 64}}
    assert Architecture.from_dict(old).head.dense == (64, 64)
    per_layer = Architecture(layers=(ConvLayer(8, 3),), head=Head(dense=(128, 32)))
    assert Architecture.from_json(per_layer.to_json()).head.dense == (128, 32)


def test_layer_table_of_blocks_by_hand() -> None:
    rows = layer_table(blocks_arch(), (1, 28, 28), 10)
    bn = 2  # batch norm's scale and shift per channel
    assert rows[:6] == [
        LayerRow("pool1", "avg pool 2x2, stride 2", (1, 14, 14), 0),
        # in 1 -> 32 changes the width: a 1x1 projection
        LayerRow(
            "res1",
            "residual 2 x 3x3, 32 filters, 1x1 projection, relu, bn",
            (32, 14, 14),
            1 * 32 * 9 + 32 * 32 * 9 + 1 * 32 + 3 * bn * 32,
        ),
        LayerRow("sep1", "separable 3x3, 64 filters, same, relu, bn", (64, 14, 14), 32 * 9 + 32 * 64 + bn * 64),
        # same width, stride 2: a projection too; same padding gives ceil(14 / 2) = 7
        LayerRow(
            "res2",
            "residual 2 x 5x5, 64 filters, stride 2, 1x1 projection, silu, bn",
            (64, 7, 7),
            64 * 64 * 25 * 2 + 64 * 64 + 3 * bn * 64,
        ),
        # valid padding: (7 - 5) // 2 + 1 = 2; no batch norm: the pointwise conv has a bias
        LayerRow("sep2", "separable 5x5, 48 filters, stride 2, valid, relu", (48, 2, 2), 64 * 25 + 64 * 48 + 48),
        LayerRow("conv1", "conv 3x3, 16 filters, stride 2, same, relu, bn", (16, 1, 1), 48 * 16 * 9 + bn * 16),
    ]
    identity = layer_table(Architecture(layers=(ConvLayer(16, 3), ResidualLayer(16, 3))), (1, 8, 8), 10)[1]
    assert identity.description == "residual 2 x 3x3, 16 filters, identity skip, relu, bn"
    assert identity.params == 2 * 16 * 16 * 9 + 2 * 2 * 16


def test_flops_of_blocks_by_hand() -> None:
    arch = Architecture(layers=(ResidualLayer(8, 3, stride=2), SeparableLayer(16, 3)), head=Head(dense=(4,)))
    # residual at 4x4 outputs: conv 1->8, conv 8->8, projection 1->8; separable: depthwise 8, pointwise 8->16
    residual = 2 * 16 * (1 * 8 * 9 + 8 * 8 * 9 + 1 * 8)
    separable = 2 * 16 * (8 * 9 + 8 * 16)
    assert forward_flops(arch, (1, 8, 8), 10) == residual + separable + 2 * 16 * 4 + 2 * 4 * 10
    assert count_params(arch, (1, 8, 8), 10) == sum(row.params for row in layer_table(arch, (1, 8, 8), 10))


@pytest.mark.parametrize(
    "layers, reason",
    [
        ((PoolLayer(), PoolLayer(), PoolLayer(), PoolLayer()), "pool4: window 2x2 is larger than its 1x1 input"),
        ((SeparableLayer(8, 5, padding="valid"),) * 2, "sep2: kernel 5x5 is larger than its 4x4 input"),
        ((ResidualLayer(8, 3, stride=2),) * 3 + (PoolLayer(),), "pool1: window 2x2 is larger than its 1x1 input"),
    ],
    ids=["four-pools", "valid-separable", "pool-after-strided-residuals"],
)
def test_a_candidate_that_cannot_fit_is_refused_with_its_reason(layers: tuple, reason: str) -> None:
    with pytest.raises(InfeasibleArchitecture) as caught:
        layer_table(Architecture(layers=layers), (1, 8, 8), 10)
    assert str(caught.value) == reason


def test_same_padded_blocks_keep_at_least_1x1() -> None:
    arch = Architecture(layers=(ResidualLayer(8, 7, stride=2), SeparableLayer(8, 7, stride=2)) * 3)
    assert layer_table(arch, (1, 8, 8), 10)[5].output_shape == (8, 1, 1)


def test_activation_count_is_the_feature_maps_written() -> None:
    # conv 8 @ 8x8, pool -> 8 @ 4x4, a residual block writes three 16 @ 4x4 maps, a separable one its
    # depthwise 16 @ 4x4 and pointwise 32 @ 4x4 maps; the head writes none.
    from cnnsearch.spec import AugmentSettings, TrainSettings, activation_count

    arch = Architecture(
        layers=(
            ConvLayer(8, 3),
            PoolLayer("max", 2, 2),
            ResidualLayer(16, 3),
            SeparableLayer(32, 3),
        ),
        head=Head("gap", (), 0.0),
        train=TrainSettings(),
        augment=AugmentSettings(),
    )
    assert activation_count(arch, (1, 8, 8), 10) == 8 * 64 + 8 * 16 + 3 * 16 * 16 + (16 * 16 + 32 * 16)
