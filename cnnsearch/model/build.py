"""Owns building a `CandidateNet` (features, then head) from an `Architecture`, with the shapes
checked by `spec.layer_table` first, so a candidate that cannot fit the input raises
`InfeasibleArchitecture` before any layer is made. Every network has the same features/head
split (fine-tuning freezes `features`).
"""

from __future__ import annotations

import torch
from torch import nn

from cnnsearch.model.layers import POOL_LAYERS, ResidualBlock, activation_layer, conv_block, separable_block
from cnnsearch.spec import Architecture, ConvLayer, PoolLayer, ResidualLayer, layer_table


class CandidateNet(nn.Module):
    """features -> head; the same split for every candidate (fine-tuning replaces `head`)."""

    def __init__(self, features: nn.Sequential, head: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_model(arch: Architecture, input_shape: tuple[int, int, int], num_classes: int) -> CandidateNet:
    """Build the network; raises InfeasibleArchitecture when it cannot fit `input_shape`."""
    rows = layer_table(arch, input_shape, num_classes)  # checks feasibility first
    channels, height, width = input_shape
    features: list[nn.Module] = []
    for layer, row in zip(arch.layers, rows):
        if isinstance(layer, ConvLayer):
            features.extend(conv_block(layer, channels, (height, width)))
        elif isinstance(layer, PoolLayer):
            features.append(POOL_LAYERS[layer.pool_type](layer.window, stride=layer.stride))
        elif isinstance(layer, ResidualLayer):
            features.append(ResidualBlock(layer, channels, (height, width)))
        else:
            features.extend(separable_block(layer, channels, (height, width)))
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
