"""Owns turning layer names into torch layers: string -> layer tables (as timm does) and the
blocks of each layer kind: conv (conv, batch norm, activation), separable (depthwise, pointwise,
batch norm, activation) and residual (two convs and a skip connection).

An unknown name lists the valid ones. Knows `spec`; must not know Optuna, Lightning or data.
"""

from __future__ import annotations

import torch
from torch import nn

from cnnsearch.spec import ConvLayer, ResidualLayer, SeparableLayer, same_padding

ACTIVATION_LAYERS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
}


POOL_LAYERS: dict[str, type[nn.Module]] = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


def activation_layer(name: str) -> nn.Module:
    if name not in ACTIVATION_LAYERS:
        raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATION_LAYERS)}")
    layer_type = ACTIVATION_LAYERS[name]
    return layer_type(inplace=True) if layer_type in (nn.ReLU, nn.SiLU, nn.ELU) else layer_type()


def same_conv(
    in_channels: int,
    out_channels: int,
    kernel: int,
    *,
    stride: int,
    padding: str,
    size: tuple[int, int],
    bias: bool,
    groups: int = 1,
) -> list[nn.Module]:
    """A conv, led by a zero pad where `same` padding is uneven (stride > 1), as `spec` computes it."""
    modules: list[nn.Module] = []
    pad: int = 0
    if padding == "same":
        if stride == 1:
            pad = kernel // 2  # odd kernels: symmetric, exact
        else:
            top, bottom = same_padding(kernel, stride, size[0])
            left, right = same_padding(kernel, stride, size[1])
            modules.append(nn.ZeroPad2d((left, right, top, bottom)))
    modules.append(nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=pad, bias=bias, groups=groups))
    return modules


def conv_block(layer: ConvLayer, in_channels: int, size: tuple[int, int]) -> list[nn.Module]:
    # batch norm's shift makes a conv bias redundant
    modules = same_conv(
        in_channels,
        layer.filters,
        layer.kernel_size,
        stride=layer.stride,
        padding=layer.padding,
        size=size,
        bias=not layer.batch_norm,
    )
    if layer.batch_norm:
        modules.append(nn.BatchNorm2d(layer.filters))
    modules.append(activation_layer(layer.activation))
    return modules


def separable_block(layer: SeparableLayer, in_channels: int, size: tuple[int, int]) -> list[nn.Module]:
    """Depthwise conv (no bias: the pointwise conv's bias or batch norm absorbs it), pointwise
    1x1 conv, batch norm, activation: ends in its activation, like a conv block."""
    modules = same_conv(
        in_channels,
        in_channels,
        layer.kernel_size,
        stride=layer.stride,
        padding=layer.padding,
        size=size,
        bias=False,
        groups=in_channels,
    )
    modules.append(nn.Conv2d(in_channels, layer.filters, 1, bias=not layer.batch_norm))
    if layer.batch_norm:
        modules.append(nn.BatchNorm2d(layer.filters))
    modules.append(activation_layer(layer.activation))
    return modules


class ResidualBlock(nn.Module):
    """activation(body(x) + shortcut(x)): body is conv (stride), bn, activation, conv, bn; the
    shortcut a 1x1 conv and bn when the width or the stride changes, else the input itself."""

    def __init__(self, layer: ResidualLayer, in_channels: int, size: tuple[int, int]) -> None:
        super().__init__()
        filters, kernel, bias = layer.filters, layer.kernel_size, not layer.batch_norm
        out_size = (-(-size[0] // layer.stride), -(-size[1] // layer.stride))
        body = same_conv(in_channels, filters, kernel, stride=layer.stride, padding="same", size=size, bias=bias)
        if layer.batch_norm:
            body.append(nn.BatchNorm2d(filters))
        body.append(activation_layer(layer.activation))
        body += same_conv(filters, filters, kernel, stride=1, padding="same", size=out_size, bias=bias)
        if layer.batch_norm:
            body.append(nn.BatchNorm2d(filters))
        self.body = nn.Sequential(*body)
        shortcut: list[nn.Module] = []
        if in_channels != filters or layer.stride != 1:
            # A 1x1 conv at the same stride gives ceil(size / stride) outputs: the body's size.
            shortcut.append(nn.Conv2d(in_channels, filters, 1, stride=layer.stride, bias=bias))
            if layer.batch_norm:
                shortcut.append(nn.BatchNorm2d(filters))
        self.shortcut = nn.Sequential(*shortcut) if shortcut else nn.Identity()
        self.activation = activation_layer(layer.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.body(x) + self.shortcut(x))
