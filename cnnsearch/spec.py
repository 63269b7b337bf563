"""Owns one concrete candidate: its layers, head, training and augmentation settings.

An `Architecture` is what a search space is sampled into and what every later step
(training, export, the leaderboard) reads. It round-trips through JSON exactly, has a
compact one-line form for tables, and knows its own shape arithmetic, so feasibility and
parameter counts are known before anything is built.

Pure Python: must not import torch or Optuna (the leaderboard reads specs without them).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from cnnsearch.errors import InfeasibleArchitecture

ACTIVATIONS = ("relu", "gelu", "silu", "elu")
PADDINGS = ("same", "valid")
POOL_KINDS = ("max", "avg")
HEAD_POOLINGS = ("flatten", "gap")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("onecycle", "cosine", "constant")


@dataclass(frozen=True)
class ConvLayer:
    filters: int  # output channels
    kernel_size: int  # square kernel side, odd
    stride: int = 1
    padding: Literal["same", "valid"] = "same"  # same: keep size at stride 1; valid: no padding
    activation: str = "relu"
    batch_norm: bool = True  # BatchNorm2d between conv and activation (conv then has no bias)
    kind: Literal["conv"] = "conv"

    def compact(self) -> str:
        text = f"c{self.filters}k{self.kernel_size}"
        if self.stride != 1:
            text += f"s{self.stride}"
        if self.padding == "valid":
            text += "v"
        return text


@dataclass(frozen=True)
class PoolLayer:
    pool_type: Literal["max", "avg"] = "max"
    window: int = 2  # square window side, in pixels
    stride: int = 2
    kind: Literal["pool"] = "pool"

    def compact(self) -> str:
        text = f"{self.pool_type[0]}p{self.window}"
        if self.stride != self.window:
            text += f"s{self.stride}"
        return text


@dataclass(frozen=True)
class ResidualLayer:
    """Two same-padded convs with a skip connection (ResNet's basic block): conv (stride), batch
    norm, activation, conv, batch norm, plus the input, then the activation. The skip is a 1x1
    conv (the projection) when the width or the stride changes, else the input itself."""

    filters: int  # output channels of both convs
    kernel_size: int = 3  # square kernel side of both convs, odd
    stride: int = 1  # stride of the first conv (and of the projection)
    activation: str = "relu"
    batch_norm: bool = True  # after each conv and the projection (the convs then have no bias)
    kind: Literal["residual"] = "residual"

    def compact(self) -> str:
        return f"r{self.filters}k{self.kernel_size}" + (f"s{self.stride}" if self.stride != 1 else "")


@dataclass(frozen=True)
class SeparableLayer:
    """A depthwise conv (one kernel per input channel, no bias), then a 1x1 pointwise conv to
    `filters` channels, batch norm and activation (Xception's separable conv)."""

    filters: int  # output channels of the pointwise conv
    kernel_size: int = 3  # square kernel side of the depthwise conv, odd
    stride: int = 1  # stride of the depthwise conv
    padding: Literal["same", "valid"] = "same"
    activation: str = "relu"
    batch_norm: bool = True  # after the pointwise conv (which then has no bias)
    kind: Literal["separable"] = "separable"

    def compact(self) -> str:
        text = f"s{self.filters}k{self.kernel_size}"
        if self.stride != 1:
            text += f"s{self.stride}"
        if self.padding == "valid":
            text += "v"
        return text


Layer = ConvLayer | PoolLayer | ResidualLayer | SeparableLayer
LAYER_TYPES: dict[str, type[Layer]] = {
    "conv": ConvLayer,
    "pool": PoolLayer,
    "residual": ResidualLayer,
    "separable": SeparableLayer,
}
LAYER_KINDS = tuple(LAYER_TYPES)


@dataclass(frozen=True)
class Head:
    pooling: Literal["flatten", "gap"] = "gap"  # gap: global average pooling before the dense layers
    dense: tuple[int, ...] = ()  # widths of the hidden dense layers, in order
    dropout: float = 0.0  # drop probability before every dense layer, the classifier included
    activation: str = "relu"

    def compact(self) -> str:
        parts = [self.pooling] + [f"fc{units}" for units in self.dense]
        if self.dropout > 0:
            parts.append(f"d{self.dropout:g}")
        return "-".join(parts)


@dataclass(frozen=True)
class TrainSettings:
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 5e-4  # decoupled for adamw, L2 for sgd
    momentum: float = 0.9  # sgd only (nesterov)
    batch_size: int = 128  # images per optimiser step (the effective batch)
    epochs: int = 10  # full passes over the training split
    label_smoothing: float = 0.0
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    warmup: float = 0.2  # share of all steps spent warming up (onecycle and cosine)

    def compact(self) -> str:
        """e.g. `adamw lr3.4e-3 wd4.0e-4 b64 ls0.1` (the schedule when not onecycle; epochs apart)."""
        parts = [self.optimizer, f"lr{_sci(self.lr)}"]
        if self.optimizer == "sgd":
            parts.append(f"m{self.momentum:g}")
        if self.weight_decay > 0:
            parts.append(f"wd{_sci(self.weight_decay)}")
        parts.append(f"b{self.batch_size}")
        if self.label_smoothing > 0:
            parts.append(f"ls{self.label_smoothing:g}")
        if self.schedule != "onecycle":
            parts.append(self.schedule)
        return " ".join(parts)


@dataclass(frozen=True)
class AugmentSettings:
    translate: int = 0  # max random shift in pixels on each axis, zero padded
    flip: bool = False  # random horizontal flip (wrong for digits and text)
    cutout: int = 0  # side of a random zeroed square, in pixels; 0 = off

    def compact(self) -> str:
        """e.g. `shift2 flip cutout4`; "" with no augmentation."""
        parts = [f"shift{self.translate}"] if self.translate > 0 else []
        if self.flip:
            parts.append("flip")
        if self.cutout > 0:
            parts.append(f"cutout{self.cutout}")
        return " ".join(parts)


def _sci(value: float) -> str:
    """Two significant digits, short: 0.003389 -> 3.4e-3."""
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


@dataclass(frozen=True)
class Architecture:
    """A concrete candidate: everything needed to rebuild and retrain it."""

    layers: tuple[Layer, ...]
    head: Head = field(default_factory=Head)
    train: TrainSettings = field(default_factory=TrainSettings)
    augment: AugmentSettings = field(default_factory=AugmentSettings)

    # ---- text forms -------------------------------------------------------
    def compact(self) -> str:
        """One line for tables, e.g. `c32k3-c32k3-mp2-c64k3s2-gap-fc128-d0.3 relu+bn`."""
        body = "-".join([layer.compact() for layer in self.layers] + [self.head.compact()])
        convs = [layer for layer in self.layers if not isinstance(layer, PoolLayer)]
        activations = sorted({layer.activation for layer in convs}) or [self.head.activation]
        norm = "+bn" if any(layer.batch_norm for layer in convs) else ""
        return f"{body} {'/'.join(activations)}{norm}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["layers"] = [asdict(layer) for layer in self.layers]
        data["head"]["dense"] = list(self.head.dense)
        return data

    def to_json(self, *, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Architecture:
        layers: list[Layer] = []
        for raw in data["layers"]:
            kind = raw.get("kind", "conv")
            if kind not in LAYER_TYPES:
                raise ValueError(f"unknown layer kind {kind!r}; valid kinds: {', '.join(LAYER_KINDS)}")
            layer_type = LAYER_TYPES[kind]
            layers.append(layer_type(**known_fields(layer_type, raw)))
        head_raw = dict(data.get("head", {}))
        if "dense" not in head_raw and "dense_units" in head_raw:
            # Written before each hidden dense layer had its own width: one width for all of them.
            head_raw["dense"] = [head_raw["dense_units"]] * int(head_raw.get("dense_layers", 1))
        head_raw["dense"] = tuple(head_raw.get("dense", ()))
        return cls(
            layers=tuple(layers),
            head=Head(**known_fields(Head, head_raw)),
            train=TrainSettings(**known_fields(TrainSettings, data.get("train", {}))),
            augment=AugmentSettings(**known_fields(AugmentSettings, data.get("augment", {}))),
        )

    @classmethod
    def from_json(cls, text: str) -> Architecture:
        return cls.from_dict(json.loads(text))

    def canonical_hash(self) -> str:
        """Identity of what training would do: equal hashes train the same network the same way."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def with_epochs(self, epochs: int) -> Architecture:
        from dataclasses import replace

        return replace(self, train=replace(self.train, epochs=epochs))


def known_fields(cls: type, raw: dict[str, Any]) -> dict[str, Any]:
    """The items of `raw` that name a field of dataclass `cls` (older or newer records may carry others)."""
    names = {f.name for f in fields(cls)}
    return {key: value for key, value in raw.items() if key in names}


# ---- shape arithmetic ----------------------------------------------------
@dataclass(frozen=True)
class LayerRow:
    """One row of the layer table: what `show` prints and what params are checked against."""

    name: str  # e.g. "conv1", "pool1", "res1", "sep1", "fc1", "classifier"
    description: str  # e.g. "conv 3x3, 32 filters, relu, bn"
    output_shape: tuple[int, ...]  # (C, H, W) or (features,)
    params: int
    # FLOPs of one forward pass on one image (2 x multiply-adds of convs and dense layers);
    # derived from the rest, so left out of equality.
    flops: int = field(default=0, compare=False)


def _conv_out(size: int, kernel: int, stride: int, padding: str) -> int:
    if padding == "same":
        return -(-size // stride)  # ceil: PyTorch pads so that stride 1 keeps the size
    return (size - kernel) // stride + 1


def same_padding(kernel: int, stride: int, size: int) -> tuple[int, int]:
    """(before, after) padding that makes a conv give ceil(size / stride) outputs."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


# The name of each kind's rows in the layer table: conv1, pool1, res1, sep1.
ROW_PREFIX = {"conv": "conv", "pool": "pool", "residual": "res", "separable": "sep"}


def _conv_like(layer: Any, name: str, channels: int, height: int, width: int) -> LayerRow:
    """The row of a conv, residual or separable layer (all weights, same or valid padding)."""
    padding = getattr(layer, "padding", "same")  # a residual block is always same-padded
    kernel, filters = layer.kernel_size, layer.filters
    if padding == "valid" and (kernel > height or kernel > width):
        raise InfeasibleArchitecture(f"{name}: kernel {kernel}x{kernel} is larger than its {height}x{width} input")
    height = _conv_out(height, kernel, layer.stride, padding)
    width = _conv_out(width, kernel, layer.stride, padding)
    norm = 2 * filters if layer.batch_norm else filters  # batch norm's scale and shift, or a bias
    extras = [layer.activation] + (["bn"] if layer.batch_norm else [])
    stride = f", stride {layer.stride}" if layer.stride != 1 else ""
    if isinstance(layer, ConvLayer):
        macs = channels * filters * kernel**2
        params = macs + norm
        what = f"conv {kernel}x{kernel}, {filters} filters{stride}, {padding}"
    elif isinstance(layer, SeparableLayer):
        macs = channels * kernel**2 + channels * filters  # depthwise, then pointwise
        params = macs + norm
        what = f"separable {kernel}x{kernel}, {filters} filters{stride}, {padding}"
    else:
        project = channels != filters or layer.stride != 1
        macs = channels * filters * kernel**2 + filters * filters * kernel**2 + (channels * filters if project else 0)
        params = macs + norm * (3 if project else 2)
        what = f"residual 2 x {kernel}x{kernel}, {filters} filters{stride}, " + (
            "1x1 projection" if project else "identity skip"
        )
    if height < 1 or width < 1:
        raise InfeasibleArchitecture(f"{name}: the feature map shrinks below 1x1")
    return LayerRow(name, f"{what}, {', '.join(extras)}", (filters, height, width), params, 2 * macs * height * width)


def layer_table(arch: Architecture, input_shape: tuple[int, int, int], num_classes: int) -> list[LayerRow]:
    """Every layer with its output shape, parameter count and FLOPs, by arithmetic alone.

    Raises InfeasibleArchitecture when a feature map shrinks below 1x1 or a kernel or
    window is larger than its input: such a candidate must never reach the trainer.
    """
    channels, height, width = input_shape
    rows: list[LayerRow] = []
    counts: dict[str, int] = {}
    for layer in arch.layers:
        counts[layer.kind] = counts.get(layer.kind, 0) + 1
        name = f"{ROW_PREFIX[layer.kind]}{counts[layer.kind]}"
        if isinstance(layer, PoolLayer):
            if layer.window > height or layer.window > width:
                raise InfeasibleArchitecture(
                    f"{name}: window {layer.window}x{layer.window} is larger than its {height}x{width} input"
                )
            height = (height - layer.window) // layer.stride + 1
            width = (width - layer.window) // layer.stride + 1
            if height < 1 or width < 1:
                raise InfeasibleArchitecture(f"{name}: the feature map shrinks below 1x1")
            description = f"{layer.pool_type} pool {layer.window}x{layer.window}, stride {layer.stride}"
            row = LayerRow(name, description, (channels, height, width), 0)
        else:
            row = _conv_like(layer, name, channels, height, width)
        channels, height, width = row.output_shape
        rows.append(row)

    if arch.head.pooling == "gap":
        features = channels
        rows.append(LayerRow("gap", "global average pooling", (features,), 0))
    else:
        features = channels * height * width
        rows.append(LayerRow("flatten", "flatten", (features,), 0))
    for index, units in enumerate(arch.head.dense, start=1):
        description = f"dense {units}, {arch.head.activation}"
        rows.append(LayerRow(f"fc{index}", description, (units,), features * units + units, 2 * features * units))
        features = units
    rows.append(
        LayerRow(
            "classifier",
            f"dense {num_classes}",
            (num_classes,),
            features * num_classes + num_classes,
            2 * features * num_classes,
        )
    )
    return rows


def count_params(arch: Architecture, input_shape: tuple[int, int, int], num_classes: int) -> int:
    """Trainable parameters of the built network (equals sum(p.numel()) of the module)."""
    return sum(row.params for row in layer_table(arch, input_shape, num_classes))


def forward_flops(arch: Architecture, input_shape: tuple[int, int, int], num_classes: int) -> int:
    """FLOPs of one forward pass on one image, by arithmetic: what torch's FlopCounterMode
    counts (2 x multiply-adds of convolutions and dense layers), in microseconds instead of
    the milliseconds of a counted forward pass; the tests hold the two equal."""
    return sum(row.flops for row in layer_table(arch, input_shape, num_classes))


def activation_count(arch: Architecture, input_shape: tuple[int, int, int], num_classes: int) -> int:
    """Feature-map values one image's forward pass writes (the outputs of convs, pools and blocks;
    a residual block writes three maps, a separable one two). Batch norm, activations, padding
    and pooling are memory-bound: on a CPU they cost time per value written, not per FLOP."""
    rows = layer_table(arch, input_shape, num_classes)
    channels = input_shape[0]
    total = 0
    for layer, row in zip(arch.layers, rows, strict=False):
        if len(row.output_shape) != 3:
            continue
        out_channels, height, width = row.output_shape
        written = out_channels * height * width
        if isinstance(layer, ResidualLayer):
            written *= 3  # first conv, second conv, the sum with the skip
        elif isinstance(layer, SeparableLayer):
            written += channels * height * width  # the depthwise conv's own output
        total += written
        channels = out_channels
    return total


def parse_input_shape(text: str) -> tuple[int, int, int]:
    """`1x28x28` -> (1, 28, 28): channels x height x width."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(part.strip().isdecimal() and int(part) > 0 for part in parts):
        raise ValueError(f"input shape must look like CxHxW (e.g. 1x28x28), but got {text!r}")
    channels, height, width = (int(part) for part in parts)
    return channels, height, width
