"""Owns turning an `Architecture` into a `torch.nn.Module`, and measuring it (FLOPs).

Imports torch and the spec only, so an exported model loads without Optuna or Lightning.
Every network has the same split: `features` (conv and pool layers) and `head`
(pooling, dense layers, classifier).
"""
from __future__ import annotations

import torch
from torch import nn

from cnnsearch.spec import Architecture, ConvLayer, layer_table, same_padding

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


class CandidateNet(nn.Module):
    """features -> head; the same split for every candidate (fine-tuning replaces `head`)."""

    def __init__(self, features: nn.Sequential, head: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _conv_block(layer: ConvLayer, in_channels: int, size: tuple[int, int]) -> list[nn.Module]:
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


def build_model(arch: Architecture, input_shape: tuple[int, int, int], num_classes: int) -> CandidateNet:
    """Build the network; raises InfeasibleArchitecture when it cannot fit `input_shape`."""
    rows = layer_table(arch, input_shape, num_classes)  # checks feasibility first
    channels, height, width = input_shape
    features: list[nn.Module] = []
    for layer, row in zip(arch.layers, rows):
        if isinstance(layer, ConvLayer):
            features.extend(_conv_block(layer, channels, (height, width)))
        else:
            features.append(POOL_LAYERS[layer.pool_type](layer.window, stride=layer.stride))
        channels, height, width = row.output_shape

    head: list[nn.Module] = []
    if arch.head.pooling == "gap":
        head += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        in_features = channels
    else:
        head.append(nn.Flatten())
        in_features = channels * height * width
    for units in arch.head.dense:
        if arch.head.dropout > 0:
            head.append(nn.Dropout(arch.head.dropout))
        head += [nn.Linear(in_features, units), activation_layer(arch.head.activation)]
        in_features = units
    if arch.head.dropout > 0:
        head.append(nn.Dropout(arch.head.dropout))
    head.append(nn.Linear(in_features, num_classes))
    return CandidateNet(nn.Sequential(*features), nn.Sequential(*head))


def count_flops(model: nn.Module, input_shape: tuple[int, int, int]) -> int:
    """FLOPs of one forward pass on one image, counted by torch's own flop counter."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, *input_shape, device=device))
        return int(counter.get_total_flops())
    finally:
        model.train(was_training)
