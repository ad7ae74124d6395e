"""A small ResNet with batch-statistics BatchNorm (paper 000 Section 4.3, scaled down).

BatchNorm layers are built with ``track_running_stats=False`` as in the paper's
ResNet18 runs: they always normalize with the statistics of the current batch, in
training and evaluation alike, so the loss of a fixed batch is a deterministic
function of the weights (the Hessian operator needs this).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

__all__ = ["ResNet"]


class BasicBlock(nn.Module):
    """Two 3×3 conv + BatchNorm layers with a (projected when needed) shortcut, ReLU.

    Example:
        >>> import torch
        >>> BasicBlock(4, 8, stride=2)(torch.zeros(2, 4, 8, 8)).shape  # halves the resolution
        torch.Size([2, 8, 4, 4])
    """

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out, track_running_stats=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out, track_running_stats=False)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                nn.BatchNorm2d(c_out, track_running_stats=False),
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """stem conv -> one BasicBlock per stage (widths ``width * 2**i``) -> pool -> linear.

    ``ResNet(in_channels=1, width=8, stages=2)`` has 5,122 parameters on 8x8 digits.

    Example:
        >>> import torch
        >>> model = ResNet(in_channels=1, width=8, stages=2)
        >>> model(torch.randn(3, 1, 8, 8)).shape, sum(p.numel() for p in model.parameters())
        (torch.Size([3, 10]), 5122)
    """

    def __init__(
        self, in_channels: int = 1, n_classes: int = 10, width: int = 8, stages: int = 2
    ) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width, track_running_stats=False)
        layers, c = [], width
        for i in range(stages):
            c_out = width * 2**i
            layers.append(BasicBlock(c, c_out, stride=1 if i == 0 else 2))
            c = c_out
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(c, n_classes)

    def forward(self, x):
        out = self.layers(F.relu(self.bn(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))
