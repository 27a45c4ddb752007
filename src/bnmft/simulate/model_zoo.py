"""Torchvision-style BatchNorm models built from torch layers, at a width you choose: the models the probe and the
graph prediction (:func:`bnmft.simulate.predict_model`) are tested on and the main job measures.

The layouts, initialisations and in-place activations follow torchvision's ``resnet18/34/50``, ``vgg11_bn`` /
``vgg16_bn``, ``densenet121`` and ``mobilenet_v2`` (torchvision itself is never imported: its wheel here is a CUDA
build that fails to import beside torch+cpu). ``width`` scales every channel count: 1 is torchvision's (ResNet base
64, VGG 64...512 and a 4096-wide classifier, DenseNet growth 32, MobileNetV2 multiplier 1); the CPU-sized defaults
keep a forward and backward at B = 32 on a 32x32 image well under a second. Each builder returns a fresh
``torch.nn.Module`` in training mode; ``ZOO`` maps the names used by the CLI (``--model bnmft.simulate.model_zoo:
resnet18``) and the report to them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from ..errors import InputError


def _check_width(width: float, name: str) -> float:
    if isinstance(width, bool) or not isinstance(width, int | float) or not 0 < width <= 4:
        raise InputError(f"{name}: width must be a number in (0, 4], got {width!r}")
    return float(width)


def _channels(base: int, width: float, divisor: int = 1) -> int:
    """``base * width`` rounded to a multiple of ``divisor`` (at least one divisor; torchvision's
    ``_make_divisible`` rule: never more than 10% below ``base * width``)."""
    value = base * width
    out = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * value else out


def _kaiming_fan_out(model: nn.Module, linear_std: float | None = None) -> nn.Module:
    """torchvision's initialisation: convolutions kaiming-normal (fan_out, relu), BatchNorm weight 1 and bias 0,
    Linear N(0, linear_std^2) with bias 0 where ``linear_std`` is given (VGG, MobileNetV2), else torch's default."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0, linear_std)
            nn.init.zeros_(m.bias)
    return model


# ---------------------------------------------------------------------------------------------------- ResNet
class BasicBlock(nn.Module):
    """torchvision's post-activation BasicBlock: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (v1.5: the stride on the 3x3 convolution), expansion 4."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """torchvision's ResNet: 7x7/2 stem, BN, ReLU, 3x3/2 max pool, four stages (the first stride 1, the others
    stride 2 with a 1x1 conv + BN downsampling shortcut), global average pool, Linear."""

    def __init__(self, block: type, layers: list[int], width: float = 0.25, num_classes: int = 10):
        super().__init__()
        base = _channels(64, width)
        self.inplanes = base
        self.conv1 = nn.Conv2d(3, base, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._stage(block, base, layers[0], 1)
        self.layer2 = self._stage(block, 2 * base, layers[1], 2)
        self.layer3 = self._stage(block, 4 * base, layers[2], 2)
        self.layer4 = self._stage(block, 8 * base, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8 * base * block.expansion, num_classes)
        _kaiming_fan_out(self)

    def _stage(self, block: type, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))  # fmt: skip
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(width: float = 0.25, num_classes: int = 10) -> ResNet:
    """ResNet-18 layout (BasicBlock, [2, 2, 2, 2]); ``width`` 0.25: base 16 channels."""
    return ResNet(BasicBlock, [2, 2, 2, 2], _check_width(width, "resnet18"), num_classes)


def resnet34(width: float = 0.25, num_classes: int = 10) -> ResNet:
    """ResNet-34 layout (BasicBlock, [3, 4, 6, 3])."""
    return ResNet(BasicBlock, [3, 4, 6, 3], _check_width(width, "resnet34"), num_classes)


def resnet50(width: float = 0.125, num_classes: int = 10) -> ResNet:
    """ResNet-50 layout (Bottleneck, [3, 4, 6, 3]); ``width`` 0.125: base 8 channels, 256 at the end."""
    return ResNet(Bottleneck, [3, 4, 6, 3], _check_width(width, "resnet50"), num_classes)


# ---------------------------------------------------------------------------------------------------- VGG
VGG_LAYOUTS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """torchvision's VGG with BatchNorm: 3x3 conv, BN, ReLU blocks and 2x2 max pools, adaptive average pool to 7x7,
    and the classifier Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear (4096 hidden units times ``width``)."""

    def __init__(self, layout: list, width: float = 0.25, num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for v in layout:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            out = _channels(v, width)
            layers += [nn.Conv2d(channels, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        hidden = _channels(4096, width / 4)
        self.classifier = nn.Sequential(
            nn.Linear(channels * 49, hidden), nn.ReLU(True), nn.Dropout(),
            nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(), nn.Linear(hidden, num_classes),
        )  # fmt: skip
        _kaiming_fan_out(self, linear_std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def vgg11_bn(width: float = 0.25, num_classes: int = 10) -> VGG:
    """VGG-11 with BatchNorm (8 conv layers); ``width`` 0.25: 16 ... 128 channels, 256 hidden units."""
    return VGG(VGG_LAYOUTS[11], _check_width(width, "vgg11_bn"), num_classes)


def vgg16_bn(width: float = 0.25, num_classes: int = 10) -> VGG:
    """VGG-16 with BatchNorm (13 conv layers)."""
    return VGG(VGG_LAYOUTS[16], _check_width(width, "vgg16_bn"), num_classes)


# ---------------------------------------------------------------------------------------------------- DenseNet
class DenseLayer(nn.Module):
    """BN, ReLU, 1x1 conv to ``bn_size * growth``, BN, ReLU, 3x3 conv to ``growth``; the output is the input with the
    new features concatenated."""

    def __init__(self, channels: int, growth: int, bn_size: int = 4):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(channels, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))
        return torch.cat([x, new], 1)


class Transition(nn.Module):
    """BN, ReLU, 1x1 conv halving the channels, 2x2 average pool."""

    def __init__(self, channels: int, out: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(channels, out, 1, bias=False)
        self.pool = nn.AvgPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(self.relu(self.norm(x))))


class DenseNet(nn.Module):
    """torchvision's DenseNet-BC: 7x7/2 stem, BN, ReLU, 3x3/2 max pool, dense blocks joined by transitions, a final
    BN and ReLU, global average pool, Linear."""

    def __init__(self, blocks: tuple[int, ...] = (6, 12, 24, 16), width: float = 0.25, num_classes: int = 10):
        super().__init__()
        growth, channels = _channels(32, width), _channels(64, width)
        features: list[tuple[str, nn.Module]] = [
            ("conv0", nn.Conv2d(3, channels, 7, 2, 3, bias=False)), ("norm0", nn.BatchNorm2d(channels)),
            ("relu0", nn.ReLU(inplace=True)), ("pool0", nn.MaxPool2d(3, 2, 1)),
        ]  # fmt: skip
        for i, n in enumerate(blocks):
            layers = []
            for _ in range(n):
                layers.append(DenseLayer(channels, growth))
                channels += growth
            features.append((f"denseblock{i + 1}", nn.Sequential(*layers)))
            if i + 1 < len(blocks):
                features.append((f"transition{i + 1}", Transition(channels, channels // 2)))
                channels //= 2
        features.append(("norm5", nn.BatchNorm2d(channels)))
        self.features = nn.Sequential(OrderedDict(features))
        self.classifier = nn.Linear(channels, num_classes)
        for m in self.modules():  # torchvision's DenseNet: kaiming-normal (fan_in), BN 1/0, Linear bias 0
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.features(x))
        out = torch.flatten(nn.functional.adaptive_avg_pool2d(out, (1, 1)), 1)
        return self.classifier(out)


def densenet121(width: float = 0.25, num_classes: int = 10) -> DenseNet:
    """DenseNet-121 layout (blocks 6, 12, 24, 16, bn_size 4); ``width`` 0.25: growth 8, 16 stem channels."""
    return DenseNet((6, 12, 24, 16), _check_width(width, "densenet121"), num_classes)


# ---------------------------------------------------------------------------------------------------- MobileNetV2
class InvertedResidual(nn.Module):
    """1x1 expansion (when ``expand`` > 1), BN, ReLU6, 3x3 depthwise conv, BN, ReLU6, 1x1 projection, BN (the
    linear bottleneck); the input added when the stride is 1 and the channels agree."""

    def __init__(self, inp: int, oup: int, stride: int, expand: int):
        super().__init__()
        hidden = inp * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(inp, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True), nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup),
        ]  # fmt: skip
        self.conv = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and inp == oup

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


MOBILENET_V2_SETTING = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                        (6, 320, 1, 1)]  # fmt: skip


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2: 3x3/2 stem, BN, ReLU6, the inverted residual blocks (expansion t, channels c,
    repeats n, first stride s), a 1x1 conv to 1280 channels, BN, ReLU6, global average pool, Dropout(0.2),
    Linear."""

    def __init__(self, width: float = 0.25, num_classes: int = 10):
        super().__init__()
        inp, last = _channels(32, width, 8), _channels(1280, max(1.0, width), 8)  # torchvision: 1280 at least
        layers: list[nn.Module] = [nn.Sequential(nn.Conv2d(3, inp, 3, 2, 1, bias=False), nn.BatchNorm2d(inp),
                                                 nn.ReLU6(inplace=True))]  # fmt: skip
        for t, c, n, s in MOBILENET_V2_SETTING:
            out = _channels(c, width, 8)
            for i in range(n):
                layers.append(InvertedResidual(inp, out, s if i == 0 else 1, t))
                inp = out
        layers.append(nn.Sequential(nn.Conv2d(inp, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6(inplace=True)))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))
        _kaiming_fan_out(self, linear_std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v2(width: float = 0.25, num_classes: int = 10) -> MobileNetV2:
    """MobileNetV2 layout; ``width`` 0.25: 8 stem channels, 320 at the end."""
    return MobileNetV2(_check_width(width, "mobilenet_v2"), num_classes)


#: the zoo by name: builders taking ``width`` and ``num_classes``
ZOO: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50, "vgg11_bn": vgg11_bn, "vgg16_bn": vgg16_bn,
    "densenet121": densenet121, "mobilenet_v2": mobilenet_v2,
}  # fmt: skip

__all__ = ["ZOO", "densenet121", "mobilenet_v2", "resnet18", "resnet34", "resnet50", "vgg11_bn", "vgg16_bn"]
