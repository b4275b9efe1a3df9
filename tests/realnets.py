"""Look-alikes of real third-party CNNs, small and seeded, for the "any real CNN" tests.

Each mimics the constructs of a widely used model library that trip up
explanation tools (nothing is downloaded; weights are random):

- :class:`EffNetLike` — EfficientNet ports: a ``Conv2d`` subclass that owns its
  static "same" padding module and calls ``F.conv2d`` itself, Swish as a custom
  ``autograd.Function``, depthwise convolutions, squeeze-and-excitation gates
  (a broadcast per-channel multiplication).
- :class:`ConvNeXtLike` — ConvNeXt: depthwise 7×7, channels-last ``LayerNorm``
  and ``Linear`` over channels between permutes, a layer-scale parameter owned by
  the block, GELU, a stem whose LayerNorm is channels-first.
- :class:`DenseNetLike` — DenseNet: dense concatenation, BN-ReLU-conv order,
  average-pool transitions, ``F.relu`` in ``forward``.
- :class:`TorchvisionResNetLike` — torchvision's ResNet ``BasicBlock`` order: the
  downsampling shortcut runs *after* the main path, so "the last conv run" is
  the 1×1 projection, not the block's output.
- :class:`DataclassOutputNet` — a Hugging-Face-style model: a backbone stage
  returns a dataclass, the model returns a ``ModelOutput``-like dataclass.
- :class:`ControlFlowNet` — Python control flow on shapes and iteration over a
  tensor in ``forward`` (``torch.fx`` symbolic tracing cannot follow it).

``REAL_NETS`` maps a short name to ``(factory, input_shape, num_classes)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# --------------------------------------------------------------------------- EfficientNet-style


class Conv2dStaticSamePadding(nn.Conv2d):
    """TensorFlow "same" padding computed once for a fixed image size (as EfficientNet ports do)."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1, bias: bool = False,
                 image_size: int = 32) -> None:
        super().__init__(c_in, c_out, k, stride, padding=0, groups=groups, bias=bias)
        out = math.ceil(image_size / stride)
        pad = max((out - 1) * stride + (k - 1) * self.dilation[0] + 1 - image_size, 0)
        self.static_padding = (nn.ZeroPad2d((pad // 2, pad - pad // 2, pad // 2, pad - pad // 2)) if pad > 0
                               else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.static_padding(x)
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class _SwishFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D401
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return grad * (s * (1 + x * (1 - s)))


class MemoryEfficientSwish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _SwishFn.apply(x)


class MBConv(nn.Module):
    """Expand 1×1 → depthwise k×k → squeeze-and-excitation → project 1×1 (+ identity when shapes match)."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, image_size: int, expand: int = 4) -> None:
        super().__init__()
        mid = c_in * expand
        self.expand = Conv2dStaticSamePadding(c_in, mid, 1, image_size=image_size)
        self.bn0 = nn.BatchNorm2d(mid)
        self.depthwise = Conv2dStaticSamePadding(mid, mid, k, stride, groups=mid, image_size=image_size)
        self.bn1 = nn.BatchNorm2d(mid)
        squeezed = max(1, c_in // 4)
        self.se_reduce = Conv2dStaticSamePadding(mid, squeezed, 1, bias=True, image_size=1)
        self.se_expand = Conv2dStaticSamePadding(squeezed, mid, 1, bias=True, image_size=1)
        self.project = Conv2dStaticSamePadding(mid, c_out, 1, image_size=math.ceil(image_size / stride))
        self.bn2 = nn.BatchNorm2d(c_out)
        self.swish = MemoryEfficientSwish()
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.swish(self.bn0(self.expand(x)))
        out = self.swish(self.bn1(self.depthwise(out)))
        gate = F.adaptive_avg_pool2d(out, 1)
        gate = self.se_expand(self.swish(self.se_reduce(gate)))
        out = torch.sigmoid(gate) * out
        out = self.bn2(self.project(out))
        return out + x if self.residual else out


class EffNetLike(nn.Module):
    def __init__(self, num_classes: int = 5, image_size: int = 32) -> None:
        super().__init__()
        self.conv_stem = Conv2dStaticSamePadding(3, 8, 3, 2, image_size=image_size)
        self.bn0 = nn.BatchNorm2d(8)
        self.swish = MemoryEfficientSwish()
        s = math.ceil(image_size / 2)
        self.blocks = nn.ModuleList([MBConv(8, 8, 3, 1, s), MBConv(8, 12, 5, 2, s)])
        self.conv_head = Conv2dStaticSamePadding(12, 24, 1, image_size=math.ceil(s / 2))
        self.bn1 = nn.BatchNorm2d(24)
        self.avg_pooling = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(24, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.swish(self.bn0(self.conv_stem(x)))
        for block in self.blocks:
            x = block(x)
        x = self.swish(self.bn1(self.conv_head(x)))
        x = self.avg_pooling(x).flatten(start_dim=1)
        return self.fc(self.dropout(x))


# --------------------------------------------------------------------------- ConvNeXt-style


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an ``(N, C, H, W)`` map, by permuting to channels-last and back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, layer_scale: float = 1e-1) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(layer_scale * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.dwconv(x)
        x = x.permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
        x = self.pwconv2(self.act(self.pwconv1(self.norm(x))))
        x = self.gamma * x
        x = x.permute(0, 3, 1, 2)
        return shortcut + x


class ConvNeXtLike(nn.Module):
    def __init__(self, num_classes: int = 5, dims: tuple[int, int] = (8, 16)) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 4, stride=4), LayerNorm2d(dims[0], eps=1e-6))
        self.stage1 = nn.Sequential(ConvNeXtBlock(dims[0]))
        self.downsample = nn.Sequential(LayerNorm2d(dims[0], eps=1e-6), nn.Conv2d(dims[0], dims[1], 2, stride=2))
        self.stage2 = nn.Sequential(ConvNeXtBlock(dims[1]))
        self.norm = nn.LayerNorm(dims[1], eps=1e-6)
        self.head = nn.Linear(dims[1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.downsample(self.stage1(self.stem(x))))
        return self.head(self.norm(x.mean([-2, -1])))


# --------------------------------------------------------------------------- DenseNet-style


class DenseLayer(nn.Module):
    def __init__(self, c_in: int, growth: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, 2 * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(2 * growth)
        self.conv2 = nn.Conv2d(2 * growth, growth, 3, padding=1, bias=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(features, 1)
        x = self.conv1(F.relu(self.norm1(x)))
        return self.conv2(F.relu(self.norm2(x)))


class DenseBlock(nn.ModuleDict):
    def __init__(self, layers: int, c_in: int, growth: int) -> None:
        super().__init__({f"denselayer{i + 1}": DenseLayer(c_in + i * growth, growth) for i in range(layers)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


class DenseNetLike(nn.Module):
    def __init__(self, num_classes: int = 5, growth: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential()
        self.features.add_module("conv0", nn.Conv2d(3, 8, 3, padding=1, bias=False))
        self.features.add_module("norm0", nn.BatchNorm2d(8))
        self.features.add_module("relu0", nn.ReLU(inplace=True))
        self.features.add_module("denseblock1", DenseBlock(2, 8, growth))
        c = 8 + 2 * growth
        self.features.add_module("transition1", nn.Sequential(
            nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.Conv2d(c, c // 2, 1, bias=False), nn.AvgPool2d(2, 2)))
        self.features.add_module("denseblock2", DenseBlock(2, c // 2, growth))
        self.features.add_module("norm5", nn.BatchNorm2d(c // 2 + 2 * growth))
        self.classifier = nn.Linear(c // 2 + 2 * growth, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.features(x), inplace=True)
        out = F.adaptive_avg_pool2d(out, (1, 1))
        return self.classifier(torch.flatten(out, 1))


# --------------------------------------------------------------------------- torchvision ResNet order


class TVBasicBlock(nn.Module):
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
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)  # runs after the main path, as in torchvision
        out += identity
        return self.relu(out)


class TorchvisionResNetLike(nn.Module):
    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(TVBasicBlock(8, 8))
        self.layer2 = nn.Sequential(TVBasicBlock(8, 16, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# --------------------------------------------------------------------------- dataclass outputs


@dataclass
class StageOutput:
    """What a backbone stage returns (a ``BaseModelOutput``-like record)."""

    last_hidden_state: torch.Tensor
    pooled: torch.Tensor


@dataclass
class ClassifierOutput:
    """What the model returns (an ``ImageClassifierOutput``-like record)."""

    logits: torch.Tensor
    hidden: torch.Tensor


class Stage(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> StageOutput:
        hidden = self.pool(self.act(self.conv(x)))
        return StageOutput(last_hidden_state=hidden, pooled=hidden.mean((2, 3)))


class DataclassOutputNet(nn.Module):
    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.stage1 = Stage(3, 8)
        self.stage2 = Stage(8, 12)
        self.classifier = nn.Linear(12, num_classes)

    def forward(self, x: torch.Tensor) -> ClassifierOutput:
        h = self.stage1(x).last_hidden_state
        out = self.stage2(h)
        return ClassifierOutput(logits=self.classifier(out.pooled), hidden=out.last_hidden_state)


class Logits(nn.Module):
    """``net`` with a plain tensor output: the ``.logits`` of what it returns (a reference for tools that need one)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.m = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x).logits


# --------------------------------------------------------------------------- control flow on shapes


class ControlFlowNet(nn.Module):
    """Pools only inputs larger than 16 pixels and runs one branch per channel group (fx cannot trace it)."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.branches = nn.ModuleList([nn.Conv2d(4, 4, 3, padding=1) for _ in range(2)])
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        if x.shape[-1] > 16:
            x = self.pool(x)
        groups = [branch(part) for branch, part in zip(self.branches, x.split(4, dim=1))]
        x = torch.relu(torch.cat(groups, 1))
        return self.fc(x.mean((2, 3)))


# --------------------------------------------------------------------------- registry


def seeded(factory, seed: int = 0) -> nn.Module:
    """Build ``factory()`` with a fixed seed (without touching the caller's RNG), in eval mode, with BN statistics
    that are not the identity."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = factory()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


REAL_NETS: dict[str, tuple] = {
    "efficientnet": (EffNetLike, (3, 32, 32), 5),
    "convnext": (ConvNeXtLike, (3, 32, 32), 5),
    "densenet": (DenseNetLike, (3, 16, 16), 5),
    "resnet_tv": (TorchvisionResNetLike, (3, 16, 16), 5),
    "dataclass_out": (DataclassOutputNet, (3, 16, 16), 5),
    "control_flow": (ControlFlowNet, (3, 32, 32), 5),
}


def real_net(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """The seeded model ``name`` and a seeded batch of two inputs for it."""
    factory, shape, _ = REAL_NETS[name]
    model = seeded(factory, seed)
    x = torch.rand((2, *shape), generator=torch.Generator().manual_seed(seed + 1))
    return model, x
