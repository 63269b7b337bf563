"""Owns turning layer names into torch layers: string -> layer tables (as timm does) and the
conv block (conv, batch norm, activation) of one `ConvLayer`.

An unknown name lists the valid ones. Knows `spec`; must not know Optuna, Lightning or data.
"""

from __future__ import annotations

from torch import nn

from cnnsearch.spec import ConvLayer, same_padding

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


def conv_block(layer: ConvLayer, in_channels: int, size: tuple[int, int]) -> list[nn.Module]:
    modules: list[nn.Module] = []
    padding: int | str = 0
    if layer.padding == "same":
        if layer.stride == 1:
            padding = layer.kernel_size // 2  # odd kernels: symmetric, exact
        else:
            top, bottom = same_padding(layer.kernel_size, layer.stride, size[0])
            left, right = same_padding(layer.kernel_size, layer.stride, size[1])
            modules.append(nn.ZeroPad2d((left, right, top, bottom)))
    modules.append(
        nn.Conv2d(
            in_channels,
            layer.filters,
            layer.kernel_size,
            stride=layer.stride,
            padding=padding,
            bias=not layer.batch_norm,  # batch norm's shift makes a conv bias redundant
        )
    )
    if layer.batch_norm:
        modules.append(nn.BatchNorm2d(layer.filters))
    modules.append(activation_layer(layer.activation))
    return modules
