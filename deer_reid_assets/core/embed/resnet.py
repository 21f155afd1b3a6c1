"""ResNet-18/34/50 with torchvision's layout, without importing torchvision.

``import torchvision`` pulls in ``torchvision.ops``, which imports ``torch._dynamo``: about 3 s on a
2-core CPU, paid by every process that embeds or trains (an upload's run, a CLI command), on top of
torch's own import. These networks are built the way torchvision builds them (the same modules in
the same order, the same initialisation), so:

* their state-dict keys and shapes are torchvision's (``conv1.weight``, ``layer1.0.bn1.running_mean``,
  ``layer4.2.downsample.0.weight``, ``fc.bias`` ...): torchvision's ImageNet files load as they are;
* with the same seed they get the same random weights as ``torchvision.models.resnet50(weights=None)``
  (tested against torchvision in the test suite).

The ImageNet files are torchvision's (URL and name below); they are read with ``torch.hub``.
"""

from __future__ import annotations

import torch
from torch import nn

# torchvision's ImageNet weights used here: (name, URL). resnet50's V2 recipe is the better one.
IMAGENET_WEIGHTS: dict[str, tuple[str, str]] = {
    "resnet18": ("IMAGENET1K_V1", "https://download.pytorch.org/models/resnet18-f37072fd.pth"),
    "resnet34": ("IMAGENET1K_V1", "https://download.pytorch.org/models/resnet34-b627a593.pth"),
    "resnet50": ("IMAGENET1K_V2", "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"),
}


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's "ResNet V1.5" bottleneck: the stride sits on the 3 x 3 convolution."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv1x1(cin, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


_LAYOUTS: dict[str, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


class ResNet(nn.Module):
    """The whole network, classifier ``fc`` included (as torchvision's, for the state dict and the RNG
    draws); the trunks in ``backbones.py`` and ``core/reid/network.py`` take its parts."""

    def __init__(self, arch: str, num_classes: int = 1000) -> None:
        super().__init__()
        if arch not in _LAYOUTS:
            raise ValueError(f"arch must be one of {', '.join(_LAYOUTS)}; got {arch!r}")
        block, counts = _LAYOUTS[arch]
        self.cin = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._layer(block, 64, counts[0])
        self.layer2 = self._layer(block, 128, counts[1], stride=2)
        self.layer3 = self._layer(block, 256, counts[2], stride=2)
        self.layer4 = self._layer(block, 512, counts[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for module in self.modules():  # torchvision's initialisation, in the same order
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)

    def _layer(self, block, planes: int, count: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.cin != planes * block.expansion:
            downsample = nn.Sequential(_conv1x1(self.cin, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        blocks = [block(self.cin, planes, stride, downsample)]
        self.cin = planes * block.expansion
        blocks += [block(self.cin, planes) for _ in range(1, count)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))
