"""The CIFAR ResNet18 (He et al. 2016, as adapted for 32x32 inputs).

Why this exact shape: it is the network of the course assignment this book grew from, and
every figure in the book (parameter counts, 4x4 layer4 maps, CAM resolutions) depends on it.
Differences from torchvision's ImageNet ResNet18: a 3x3 stride-1 stem and no max-pool, so a
32x32 image reaches ``layer4`` as a 4x4 map. Every ReLU is its own (non-in-place) module so
that forward/backward hooks and guided backprop see each activation; nothing is shared.

Parameter count: 11,173,962 with ``num_classes=10``.

The model carries the statistics its inputs are normalised with as two buffers,
``input_mean`` and ``input_std`` (as fastai's normalisation travels with its learner): they
are saved and loaded with its state, so every saved model knows how its inputs were
normalised, and every inference path reads them from the model (``model.normalization``)
instead of a second copy that could drift from it.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .data.inputs import CIFAR10_MEAN, CIFAR10_STD

__all__ = ["BasicBlock", "InputStats", "ResNet18", "count_parameters", "LAYER_NAMES",
           "INPUT_STATS"]

#: The state-dict names of the input statistics every ResNet18 carries.
INPUT_STATS = ("input_mean", "input_std")

LAYER_NAMES = ("layer1", "layer2", "layer3", "layer4")


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN pairs with an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class InputStats(nn.Module):
    """A module that carries the per-channel statistics its inputs are normalised with, as
    two buffers saved with its state (``input_mean``, ``input_std``). Every inference path
    reads them through :attr:`normalization`; ``fit`` sets a recipe's with
    :meth:`set_normalization`."""

    def __init__(self, mean: Sequence[float] = CIFAR10_MEAN,
                 std: Sequence[float] = CIFAR10_STD) -> None:
        super().__init__()
        self.register_buffer("input_mean", torch.zeros(3))
        self.register_buffer("input_std", torch.ones(3))
        self.set_normalization(mean, std)

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) per channel that inputs must be normalised with, from the buffers."""
        return (tuple(round(float(v), 6) for v in self.input_mean),
                tuple(round(float(v), 6) for v in self.input_std))

    def set_normalization(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Record the per-channel statistics this model's inputs are normalised with."""
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values (R, G, B) and std > 0, got {mean} "
                             f"and {std}.")
        with torch.no_grad():
            self.input_mean.copy_(torch.tensor([float(v) for v in mean]))
            self.input_std.copy_(torch.tensor([float(v) for v in std]))


class ResNet18(InputStats):
    """CIFAR ResNet18: stem (3x3 conv, BN, ReLU), layer1..layer4, global average pool, linear.

    Feature-map sizes for a 32x32 input: layer1 32x32x64, layer2 16x16x128, layer3 8x8x256,
    layer4 4x4x512.

    ``forward`` takes inputs already normalised with ``mean``/``std`` (per channel, pixels in
    [0, 1]); they default to the CIFAR-10 training statistics, and ``fit`` sets a recipe's
    own with :meth:`set_normalization`.
    """

    def __init__(self, num_classes: int = 10, mean: Sequence[float] = CIFAR10_MEAN,
                 std: Sequence[float] = CIFAR10_STD) -> None:
        super().__init__(mean, std)
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.layer1 = self._make_layer(64, 64, stride=1)
        self.layer2 = self._make_layer(64, 128, stride=2)
        self.layer3 = self._make_layer(128, 256, stride=2)
        self.layer4 = self._make_layer(256, 512, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(512, num_classes)

    @staticmethod
    def _make_layer(in_planes: int, planes: int, stride: int) -> nn.Sequential:
        return nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(self.flatten(self.pool(out)))


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all of them, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
