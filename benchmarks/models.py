"""Benchmark networks: VGG-11-style and ResNet-18-style CNNs with seeded random weights.

Both use BatchNorm (with non-trivial running statistics) and in-place ReLU; the
ResNet's BasicBlock reuses one ``nn.ReLU(inplace=True)`` twice per forward, as
torchvision's does. Weights are Kaiming-normal (fan-out) so that activations
keep their scale through the depth and the class scores are far from uniform:
occlusion maps then have a real dynamic range. Everything is returned in eval mode.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["vgg11", "resnet18", "seeded"]

_VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG11(nn.Module):
    """VGG-11 with BatchNorm (configuration A of Simonyan & Zisserman), a small classifier.

    Input ``(N, 3, H, W)`` with H, W multiples of 32; five max-pools leave ``H/32 × W/32``.
    """

    def __init__(self, num_classes: int = 10, image_size: int = 128) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for v in _VGG11:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        side = image_size // 32
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(512 * side * side, 512), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(512, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """ResNet BasicBlock; ``self.relu`` (in place) runs twice per forward."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class ResNet18(nn.Module):
    """ResNet-18 layout (He et al. 2016): 7×7/2 stem, 3×3/2 max-pool, [2, 2, 2, 2] BasicBlocks, GAP, fc."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths, c = (64, 128, 256, 512), 64
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            self.add_module(f"layer{i + 1}", nn.Sequential(BasicBlock(c, w, stride), BasicBlock(w, w)))
            c = w
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def seeded(model: nn.Module, seed: int = 0, logit_scale: float = 4.0, probe_size: int = 128) -> nn.Module:
    """Re-initialize ``model`` reproducibly (Kaiming-normal convs, random BN statistics); eval mode.

    The last linear layer is scaled so that logits have a standard deviation of
    about ``logit_scale`` on random inputs (probabilities far from uniform).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
                m.weight.normal_(0, (2.0 / fan_out) ** 0.5, generator=g)
                if m.bias is not None:
                    m.bias.uniform_(-0.05, 0.05, generator=g)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.8, 1.2, generator=g)
                m.bias.uniform_(-0.1, 0.1, generator=g)
                m.running_mean.uniform_(-0.1, 0.1, generator=g)
                m.running_var.uniform_(0.8, 1.2, generator=g)
            elif isinstance(m, nn.Linear):
                m.weight.normal_(0, (1.0 / m.in_features) ** 0.5, generator=g)
                m.bias.zero_()
        model.eval()
        last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        probe = torch.rand(4, 3, probe_size, probe_size, generator=g)
        std = float(model(probe).std())
        if std > 0:
            last.weight.mul_(logit_scale / std)
    return model


def vgg11(num_classes: int = 10, image_size: int = 128, seed: int = 0) -> nn.Module:
    """Seeded VGG-11-style network (eval mode) for ``image_size × image_size`` inputs."""
    return seeded(VGG11(num_classes, image_size), seed, probe_size=image_size)


def resnet18(num_classes: int = 10, seed: int = 0) -> nn.Module:
    """Seeded ResNet-18-style network (eval mode)."""
    return seeded(ResNet18(num_classes), seed)


REAL_SIZE = 64  # the look-alikes of third-party CNNs run at 64×64 in the benchmark


def real_net_64(name: str, seed: int = 0) -> nn.Module:
    """The seeded look-alike ``name`` of ``tests/realnets.py`` (``REAL_NETS``), built for 64×64 inputs."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    import realnets

    factory, _, _ = realnets.REAL_NETS[name]
    if name == "efficientnet":
        return realnets.seeded(lambda: realnets.EffNetLike(image_size=REAL_SIZE), seed)
    return realnets.seeded(factory, seed)
