"""The networks of the paper, built by name: LeNet-5, pre-activation CIFAR ResNets, VGG-16.

`create(name, num_classes, in_channels, image_size, norm)` is the one way in. Every net takes
(N, in_channels, image_size, image_size) images and returns (N, num_classes) logits; all of them run
on CPU or CUDA and in channels_last memory format.

`norm` picks the normalization layer: "batch" is BatchNorm2d, "layer" is GroupNorm(1, C), which
normalizes each example over all its channels and positions, so a prediction never depends on the
other examples in the batch (the paper's "LayerNorm ResNet", §6). LeNet-5 and VGG-16 have no
normalization layers at all, so for them `norm` is accepted and has no effect.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from kernels.catalog import MODELS, NORMS

NormFactory = Callable[[int], nn.Module]


def _norm_factory(norm: str) -> NormFactory:
    if norm == "batch":
        return nn.BatchNorm2d
    if norm == "layer":
        return lambda channels: nn.GroupNorm(1, channels)
    raise ValueError(f"unknown norm {norm!r}; known: {', '.join(NORMS)}")


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        # nn.Linear keeps PyTorch's default (uniform, fan-in scaled) init.


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------------------------------------------- LeNet


class LeNet5(nn.Module):
    """conv(6,5x5,pad 2)-ReLU-avgpool-conv(16,5x5)-ReLU-avgpool-FC120-FC84-FC classes.

    61,706 parameters for 1x28x28 inputs and 10 classes. No normalization layers.
    """

    def __init__(self, num_classes: int, in_channels: int, image_size: int) -> None:
        super().__init__()
        side = ((image_size // 2) - 4) // 2  # after pad-2 conv, pool, valid 5x5 conv, pool
        if side < 1:
            raise ValueError(f"lenet5 needs image_size >= 10, got {image_size}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.AvgPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(inplace=True),
            nn.AvgPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * side * side, 120),
            nn.ReLU(inplace=True),
            nn.Linear(120, 84),
            nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(torch.flatten(x, 1))


# -------------------------------------------------------------------------------------------- ResNet


class PreActBasicBlock(nn.Module):
    """norm-ReLU-conv3x3-norm-ReLU-conv3x3, plus the shortcut."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int, norm: NormFactory) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.norm1 = norm(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.norm2 = norm(planes)
        self.conv2 = nn.Conv2d(planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _projection(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu(self.norm1(x))
        # The shortcut, identity or projection, takes the raw x, as the paper's code does.
        residual = x if self.shortcut is None else self.shortcut(x)
        out = self.conv1(pre)
        out = self.conv2(self.relu(self.norm2(out)))
        return out + residual


class PreActBottleneck(nn.Module):
    """norm-ReLU-conv1x1-norm-ReLU-conv3x3-norm-ReLU-conv1x1 (x4 channels), plus the shortcut."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int, norm: NormFactory) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.norm1 = norm(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.norm2 = norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.norm3 = norm(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _projection(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu(self.norm1(x))
        residual = x if self.shortcut is None else self.shortcut(x)
        out = self.conv1(pre)
        out = self.conv2(self.relu(self.norm2(out)))
        out = self.conv3(self.relu(self.norm3(out)))
        return out + residual


def _projection(in_planes: int, out_planes: int, stride: int) -> nn.Module | None:
    """A bias-free 1x1 conv when the shape changes, else None (identity shortcut)."""
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class PreActResNet(nn.Module):
    """Pre-activation ResNet for small images: stem conv3x3 -> 16, stages of width 16/32/64 at
    strides 1/2/2, then norm-ReLU-global average pool-FC.

    depth < 44: basic blocks, (depth-2)/6 per stage. depth >= 44: bottleneck blocks (expansion 4,
    stage outputs 64/128/256), (depth-2)/9 per stage, as in the paper's code.
    """

    def __init__(self, depth: int, num_classes: int, in_channels: int, norm: str = "batch") -> None:
        super().__init__()
        norm_layer = _norm_factory(norm)
        if depth >= 44:
            block: type[PreActBasicBlock] | type[PreActBottleneck] = PreActBottleneck
            if (depth - 2) % 9:
                raise ValueError(f"bottleneck ResNet depth must be 9n+2, got {depth}")
            blocks_per_stage = (depth - 2) // 9
        else:
            block = PreActBasicBlock
            if (depth - 2) % 6:
                raise ValueError(f"basic ResNet depth must be 6n+2, got {depth}")
            blocks_per_stage = (depth - 2) // 6
        self.block = block
        self.depth = depth

        self.stem = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        in_planes = 16
        stages = []
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            layers = []
            for i in range(blocks_per_stage):
                layers.append(block(in_planes, planes, stride if i == 0 else 1, norm_layer))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*layers))
        self.stage1, self.stage2, self.stage3 = stages
        self.final_norm = norm_layer(in_planes)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.stage3(self.stage2(self.stage1(x)))
        x = self.pool(self.relu(self.final_norm(x)))
        return self.fc(torch.flatten(x, 1))


# ----------------------------------------------------------------------------------------------- VGG

_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16(nn.Module):
    """VGG-16 without batch norm, as the paper's code adapts torchvision's to 32x32 images.

    Thirteen 3x3 convolutions with five max-pools take a 32x32 image to 512x1x1; the classifier is
    Dropout-FC512-ReLU-Dropout-FC512-ReLU-FC classes (dropout 0.5). A max-pool is skipped once the
    feature map is already 1x1 (28x28 inputs reach 1x1 after four pools); an average pool to 1x1
    keeps other image sizes at the same 512 features (at 32x32 it is the identity). No
    normalization layers.
    """

    def __init__(self, num_classes: int, in_channels: int, image_size: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, side = in_channels, image_size
        for item in _VGG16:
            if item == "M":
                if side > 1:
                    layers.append(nn.MaxPool2d(2))
                    side //= 2
            else:
                layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=True)]
                channels = item
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Dropout(),
            nn.Linear(channels, 512),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(512, 512),
            nn.ReLU(inplace=True),
            nn.Linear(512, num_classes),
        )
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


# ------------------------------------------------------------------------------------------ registry

_BUILDERS: dict[str, Callable[[int, int, int, str], nn.Module]] = {
    "lenet5": lambda classes, ch, size, norm: LeNet5(classes, ch, size),
    "resnet20": lambda classes, ch, size, norm: PreActResNet(20, classes, ch, norm),
    "resnet56": lambda classes, ch, size, norm: PreActResNet(56, classes, ch, norm),
    "resnet110": lambda classes, ch, size, norm: PreActResNet(110, classes, ch, norm),
    "vgg16": lambda classes, ch, size, norm: VGG16(classes, ch, size),
}
if tuple(_BUILDERS) != MODELS:  # pragma: no cover - guards the catalog against drift at import
    raise RuntimeError(f"kernels.models registry {tuple(_BUILDERS)} != catalog.MODELS {MODELS}")


def available() -> tuple[str, ...]:
    """The model names `create` understands (equal to `kernels.catalog.MODELS`)."""
    return tuple(_BUILDERS)


def create(name: str, num_classes: int, in_channels: int, image_size: int,
           norm: str = "batch") -> nn.Module:
    """Build a freshly initialised model by name."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    _norm_factory(norm)  # validate for every model, including those without norm layers
    return _BUILDERS[name](num_classes, in_channels, image_size, norm)
