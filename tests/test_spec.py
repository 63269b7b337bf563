"""Tests for cnnsearch.spec: JSON round trip, compact form, hash identity, shape arithmetic."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import optuna
import pytest

from cnnsearch.errors import InfeasibleArchitecture
from cnnsearch.results.facts import training_compact
from cnnsearch.space.parse import load_space
from cnnsearch.spec import (
    Architecture,
    AugmentSettings,
    ConvLayer,
    Head,
    LayerRow,
    PoolLayer,
    TrainSettings,
    count_params,
    layer_table,
    parse_input_shape,
)

SPACES = sorted((Path(__file__).parent.parent / "search_spaces").glob("*.toml"))


def sampled(space_file: Path, n: int, seed: int = 0) -> list[Architecture]:
    """N candidates drawn the way a search draws them (a real in-memory study)."""
    space = load_space(space_file)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    archs = []
    for _ in range(n):
        trial = study.ask()
        archs.append(space.sample(trial))
        study.tell(trial, 0.0)
    return archs


def reference_arch() -> Architecture:
    """The compact-form example of the docs, built by hand."""
    return Architecture(
        layers=(ConvLayer(32, 3), ConvLayer(32, 3), PoolLayer("max", 2, 2), ConvLayer(64, 3, stride=2)),
        head=Head(pooling="gap", dense=(128,), dropout=0.3),
        train=TrainSettings(optimizer="sgd", lr=0.05, momentum=0.95, batch_size=64, epochs=12),
        augment=AugmentSettings(translate=2, flip=True, cutout=4),
    )


# ---- JSON -----------------------------------------------------------------------------
@pytest.fixture(autouse=True, scope="module")
def quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.parametrize("space_file", SPACES, ids=lambda path: path.stem)
def test_json_round_trip_is_exact_for_sampled_archs(space_file: Path) -> None:
    for arch in sampled(space_file, 25):
        text = arch.to_json()
        back = Architecture.from_json(text)
        assert back == arch
        assert back.to_json() == text  # stable: a second trip changes nothing
        assert Architecture.from_dict(arch.to_dict()) == arch
        assert back.canonical_hash() == arch.canonical_hash()


def test_json_round_trip_of_hand_built_arch() -> None:
    arch = reference_arch()
    text = arch.to_json(indent=2)
    assert Architecture.from_json(text) == arch
    assert Architecture.from_json(text).to_json() == arch.to_json()
    assert isinstance(Architecture.from_json(text).head.dense, tuple)  # hashable again, not a list


def test_from_dict_ignores_unknown_keys_and_fills_defaults() -> None:
    data = reference_arch().to_dict()
    data["train"]["future_knob"] = 1
    data["layers"][0]["future_knob"] = 1
    assert Architecture.from_dict(data) == reference_arch()
    minimal = Architecture.from_dict({"layers": [{"filters": 8, "kernel_size": 3}]})
    assert minimal == Architecture(layers=(ConvLayer(8, 3),))


# ---- compact form ------------------------------------------------------------------------
def test_compact_form_of_the_docs_example() -> None:
    assert reference_arch().compact() == "c32k3-c32k3-mp2-c64k3s2-gap-fc128-d0.3 relu+bn"


def test_training_compact_form_names_what_the_arch_form_leaves_out() -> None:
    arch = replace(
        reference_arch(),
        train=TrainSettings(lr=0.003389, weight_decay=0.0003967, batch_size=64, label_smoothing=0.1),
        augment=AugmentSettings(translate=1),
    )
    assert training_compact(arch.to_dict()) == "adamw lr3.4e-3 wd4.0e-4 b64 ls0.1 | shift1"
    sgd = TrainSettings(optimizer="sgd", lr=0.05, momentum=0.8, weight_decay=0.0, schedule="cosine")
    augment = AugmentSettings(flip=True, cutout=4)
    assert training_compact(replace(arch, train=sgd, augment=augment).to_dict()) == (
        "sgd lr5.0e-2 m0.8 b128 cosine | flip cutout4"
    )
    assert training_compact(replace(arch, augment=AugmentSettings()).to_dict()).endswith("ls0.1")
    # Nothing recorded, or a damaged record: an empty cell, not an error.
    assert training_compact(None) == training_compact({"train": {"lr": "fast"}}) == ""
    assert training_compact({"train": {"lr": 10**400}}) == ""
    assert training_compact({"train": "adamw", "augment": [["flip", True]]}) == "adamw lr1.0e-3 wd5.0e-4 b128"


def test_compact_form_valid_padding_avg_pool_mixed_activations_no_bn() -> None:
    arch = Architecture(
        layers=(
            ConvLayer(16, 5, padding="valid", activation="gelu", batch_norm=False),
            PoolLayer("avg", 3, 2),
            ConvLayer(8, 3, activation="silu", batch_norm=False),
        ),
        head=Head(pooling="flatten"),
    )
    assert arch.compact() == "c16k5v-ap3s2-c8k3-flatten gelu/silu"


def test_compact_form_without_conv_layers_names_the_head_activation() -> None:
    arch = Architecture(layers=(PoolLayer(),), head=Head(dense=(64, 32), activation="elu"))
    assert arch.compact() == "mp2-gap-fc64-fc32 elu"


# ---- hash -----------------------------------------------------------------------------------
def test_canonical_hash_equal_for_equal_archs() -> None:
    assert reference_arch() is not reference_arch()
    assert reference_arch().canonical_hash() == reference_arch().canonical_hash()
    assert len(reference_arch().canonical_hash()) == 16


@pytest.mark.parametrize(
    "change",
    [
        lambda a: replace(a, layers=(replace(a.layers[0], kernel_size=5),) + a.layers[1:]),
        lambda a: replace(a, layers=(replace(a.layers[0], batch_norm=False),) + a.layers[1:]),
        lambda a: replace(a, layers=a.layers[:2] + (replace(a.layers[2], pool_type="avg"),) + a.layers[3:]),
        lambda a: replace(a, layers=a.layers[:-1]),
        lambda a: replace(a, head=replace(a.head, dropout=0.2)),
        lambda a: replace(a, train=replace(a.train, lr=0.01)),
        lambda a: replace(a, augment=replace(a.augment, flip=False)),
        lambda a: a.with_epochs(13),
    ],
    ids=["kernel", "batch_norm", "pool_type", "depth", "dropout", "lr", "flip", "epochs"],
)
def test_canonical_hash_differs_when_one_knob_differs(change) -> None:
    arch = reference_arch()
    assert change(arch) != arch
    assert change(arch).canonical_hash() != arch.canonical_hash()


def test_with_epochs_changes_only_epochs() -> None:
    arch = reference_arch().with_epochs(3)
    assert arch.train.epochs == 3
    assert replace(arch, train=replace(arch.train, epochs=12)) == reference_arch()


# ---- shape arithmetic ----------------------------------------------------------------------
def test_layer_table_at_28x28_same_valid_stride_and_pooling() -> None:
    arch = Architecture(
        layers=(
            ConvLayer(8, 3),  # same, stride 1: keeps 28
            ConvLayer(16, 5, padding="valid", activation="gelu", batch_norm=False),  # 28 - 4 = 24
            PoolLayer("max", 3, 2),  # (24 - 3) // 2 + 1 = 11
            ConvLayer(16, 3, stride=2),  # same, stride 2: ceil(11 / 2) = 6
            ConvLayer(32, 3, stride=2, padding="valid"),  # (6 - 3) // 2 + 1 = 2
            PoolLayer("avg", 2, 1),  # (2 - 2) // 1 + 1 = 1
        ),
        head=Head(pooling="flatten", dense=(64,)),
    )
    assert layer_table(arch, (1, 28, 28), 10) == [
        LayerRow("conv1", "conv 3x3, 8 filters, same, relu, bn", (8, 28, 28), 1 * 8 * 9 + 2 * 8),
        LayerRow("conv2", "conv 5x5, 16 filters, valid, gelu", (16, 24, 24), 8 * 16 * 25 + 16),
        LayerRow("pool1", "max pool 3x3, stride 2", (16, 11, 11), 0),
        LayerRow("conv3", "conv 3x3, 16 filters, stride 2, same, relu, bn", (16, 6, 6), 16 * 16 * 9 + 2 * 16),
        LayerRow("conv4", "conv 3x3, 32 filters, stride 2, valid, relu, bn", (32, 2, 2), 16 * 32 * 9 + 2 * 32),
        LayerRow("pool2", "avg pool 2x2, stride 1", (32, 1, 1), 0),
        LayerRow("flatten", "flatten", (32,), 0),
        LayerRow("fc1", "dense 64, relu", (64,), 32 * 64 + 64),
        LayerRow("classifier", "dense 10", (10,), 64 * 10 + 10),
    ]
    assert count_params(arch, (1, 28, 28), 10) == 88 + 3216 + 2336 + 4672 + 2112 + 650


def test_layer_table_gap_head_ignores_spatial_size_and_flatten_does_not() -> None:
    arch = reference_arch()
    gap = layer_table(arch, (3, 32, 32), 100)
    assert [row.name for row in gap] == ["conv1", "conv2", "pool1", "conv3", "gap", "fc1", "classifier"]
    assert gap[3].output_shape == (64, 8, 8)
    assert gap[4].output_shape == (64,)
    flat = layer_table(replace(arch, head=replace(arch.head, pooling="flatten")), (3, 32, 32), 100)
    assert flat[4] == LayerRow("flatten", "flatten", (64 * 8 * 8,), 0)
    assert flat[5].params == 64 * 8 * 8 * 128 + 128


def test_infeasible_valid_kernel_larger_than_its_input() -> None:
    arch = Architecture(layers=(ConvLayer(8, 3), PoolLayer(), ConvLayer(8, 5, padding="valid")))
    with pytest.raises(InfeasibleArchitecture) as caught:
        layer_table(arch, (1, 8, 8), 10)
    assert str(caught.value) == "conv2: kernel 5x5 is larger than its 4x4 input"
    assert count_params(arch, (1, 28, 28), 10) > 0  # the same net fits a larger image


def test_infeasible_when_pools_shrink_the_map_below_1x1() -> None:
    arch = Architecture(layers=(ConvLayer(8, 3), PoolLayer()) * 4)  # 8 -> 4 -> 2 -> 1 -> ?
    with pytest.raises(InfeasibleArchitecture) as caught:
        layer_table(arch, (1, 8, 8), 10)
    assert str(caught.value) == "pool4: window 2x2 is larger than its 1x1 input"
    with pytest.raises(InfeasibleArchitecture, match="^pool4: "):
        count_params(arch, (1, 8, 8), 10)
    assert layer_table(arch, (1, 16, 16), 10)[-3].output_shape == (8, 1, 1)


def test_same_padding_never_shrinks_below_1x1() -> None:
    arch = Architecture(layers=(ConvLayer(4, 7, stride=2),) * 5)  # 8 -> 4 -> 2 -> 1 -> 1 -> 1
    assert [row.output_shape for row in layer_table(arch, (1, 8, 8), 10)[:5]] == [
        (4, 4, 4),
        (4, 2, 2),
        (4, 1, 1),
        (4, 1, 1),
        (4, 1, 1),
    ]


@pytest.mark.parametrize("text, shape", [("1x28x28", (1, 28, 28)), ("3X32X32", (3, 32, 32)), ("1x8x12", (1, 8, 12))])
def test_parse_input_shape(text: str, shape: tuple[int, int, int]) -> None:
    assert parse_input_shape(text) == shape


@pytest.mark.parametrize("text", ["28x28", "0x28x28", "1x28x-1", "1x28x28x1", "ax28x28", "1x²x28", ""])
def test_parse_input_shape_rejects_with_one_message(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_input_shape(text)
    assert str(caught.value) == f"input shape must look like CxHxW (e.g. 1x28x28), but got {text!r}"
