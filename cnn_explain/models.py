"""Seed architectures as plain ``nn.Module``s, plus a random-filter texture network.

* :func:`cifar10_cnn` — seed 000's three-block VGG-style CIFAR-10 network
  (550,570 parameters: 896, 9,248, 18,496, 36,928, 73,856, 147,584, 262,272, 1,290).
* :func:`mnist_cnn` — seed 001's network: 1×28×28 in, 32/64/128 filters, three
  conv + 2×2 max-pool blocks, flatten 3×3×128, dense 100, 10 outputs.
* :func:`tiny_vgg` — a small VGG for quick experiments and tests.
* :func:`random_texture_net` — a multi-scale network of random filters used by
  the style-transfer demo (random-weight networks synthesize textures:
  Ustyuzhaninov et al., ICLR 2017), so nothing is downloaded.

Example:
    >>> from cnn_explain.models import cifar10_cnn
    >>> sum(p.numel() for p in cifar10_cnn().parameters())
    550570
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["cifar10_cnn", "mnist_cnn", "tiny_vgg", "random_texture_net", "RandomTextureNet"]


def _block(c_in: int, c_out: int, n_convs: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for i in range(n_convs):
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1), nn.ReLU()]
    layers.append(nn.MaxPool2d(2))
    return layers


def cifar10_cnn(num_classes: int = 10) -> nn.Sequential:
    """Seed 000's CIFAR-10 network: input ``(N, 3, 32, 32)``, output ``(N, num_classes)`` logits.

    Three blocks of two 3×3 'same' convolutions (32, 64, 128 filters) and a 2×2
    max-pool, flatten (4×4×128 = 2,048), dense 128, dense ``num_classes``.
    """
    return nn.Sequential(
        *_block(3, 32, 2), *_block(32, 64, 2), *_block(64, 128, 2),
        nn.Flatten(), nn.Linear(2048, 128), nn.ReLU(), nn.Linear(128, num_classes),
    )


def mnist_cnn(num_classes: int = 10, in_channels: int = 1) -> nn.Sequential:
    """Seed 001's network: input ``(N, 1, 28, 28)``, output ``(N, num_classes)`` logits.

    conv 32 (28×28×32 = 25,088 neurons) → pool 14×14 → conv 64 → pool 7×7 →
    conv 128 → pool 3×3 → flatten 1,152 → dense 100 → dense ``num_classes``.
    """
    return nn.Sequential(
        *_block(in_channels, 32, 1), *_block(32, 64, 1), *_block(64, 128, 1),
        nn.Flatten(), nn.Linear(3 * 3 * 128, 100), nn.ReLU(), nn.Linear(100, num_classes),
    )


class _TinyVGG(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, width: int) -> None:
        super().__init__()
        self.features = nn.Sequential(*_block(in_channels, width, 2), *_block(width, 2 * width, 2))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def tiny_vgg(num_classes: int = 10, in_channels: int = 3, width: int = 8) -> nn.Module:
    """A small VGG (two blocks of two convs, global average pooling): any input size ≥ 4×4."""
    return _TinyVGG(in_channels, num_classes, width)


class _BlurPool(nn.Module):
    """Halve the resolution with a separable binomial ``[1, 3, 3, 1] / 8`` filter, stride 2, reflect padding.

    Smoother than 2×2 average pooling, whose blocky gradients print a grid on
    optimized images.
    """

    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        k = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8
        self.register_buffer("weight", (k[:, None] * k[None, :]).expand(channels, 1, 4, 4).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mode = "reflect" if min(x.shape[-2:]) > 1 else "replicate"
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode=mode), self.weight, stride=2, groups=x.shape[1])


class RandomTextureNet(nn.Module):
    """Multi-scale network of random filters for texture and style synthesis (no training, no download).

    Random single-layer networks with filters of many sizes synthesize natural
    textures nearly as well as a trained VGG (Ustyuzhaninov, Brendel, Gatys &
    Bethge, "What does it take to generate natural textures?", ICLR 2017).
    Large filters are costly at full resolution, so this network builds an image
    pyramid instead: level ``l`` is the input blurred and subsampled ``l`` times
    (binomial filter, stride 2), i.e. reduced by ``f = 2**l``, and
    on every level each kernel size ``k`` in ``kernels`` gives a ``k×k`` conv
    (``channels`` random filters; reflect padding to keep the size, replicate
    when the level is too small to reflect) and a ReLU named
    ``s{f}_conv{k}`` / ``s{f}_relu{k}``. A ``k×k`` filter on level ``f`` sees
    ``k·f`` input pixels, so the defaults cover 3 to 40 pixels at about a
    quarter of the cost of full-resolution 3/5/7/11 filters.

    Weights are drawn uniformly from ``±sqrt(3 / fan_in)`` (unit output variance
    for unit-variance inputs) with a private generator seeded by ``seed``;
    biases are zero; ``requires_grad`` is False. The maps are meant to be read
    through hooks (:func:`cnn_explain.hooks.capture`); ``forward`` returns the
    spatial mean of every map, ``(N, levels · len(kernels) · channels)``.

    Attributes:
        style_layers: every ``s{f}_relu{k}`` (the default style layers).
        content_layers: ``["s2_relu5"]`` by default (a mid-scale layer; see ``content_layers``).

    Example:
        >>> net = RandomTextureNet()
        >>> ", ".join(net.style_layers[:3])
        's1_relu3, s1_relu5, s2_relu3'
    """

    def __init__(self, kernels: tuple[int, ...] = (3, 5), levels: int = 4, channels: int = 64, seed: int = 0) -> None:
        super().__init__()
        if not kernels or any(int(k) != k or k < 1 or k % 2 == 0 for k in kernels):
            raise ValueError(f"kernels must be odd positive ints, got {kernels!r}")
        if levels < 1 or channels < 1:
            raise ValueError(f"levels and channels must be >= 1, got {levels}, {channels}")
        g = torch.Generator().manual_seed(seed)
        self.kernels, self.levels, self.channels = tuple(int(k) for k in kernels), int(levels), int(channels)
        self.pool = _BlurPool(3)
        self.branches: list[tuple[int, str, str]] = []  # (level, conv name, relu name)
        for level in range(self.levels):
            f = 2 ** level
            for k in self.kernels:
                # padded in forward: reflect, or replicate if too small. skip_init: no default
                # initialization, which would draw from the global random state
                conv = nn.utils.skip_init(nn.Conv2d, 3, channels, k)
                with torch.no_grad():
                    bound = (3.0 / (3 * k * k)) ** 0.5
                    conv.weight.uniform_(-bound, bound, generator=g)
                    conv.bias.zero_()
                self.add_module(f"s{f}_conv{k}", conv)
                self.add_module(f"s{f}_relu{k}", nn.ReLU())
                self.branches.append((level, f"s{f}_conv{k}", f"s{f}_relu{k}"))
        for p in self.parameters():
            p.requires_grad_(False)

    @property
    def style_layers(self) -> list[str]:
        return [relu for _, _, relu in self.branches]

    @property
    def content_layers(self) -> list[str]:
        level = min(1, self.levels - 1)
        return [[relu for lev, _, relu in self.branches if lev == level][-1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps, level, image = [], 0, x
        for lev, conv, relu in self.branches:
            while level < lev:
                image, level = self.pool(image), level + 1
            pad = getattr(self, conv).kernel_size[0] // 2
            mode = "reflect" if min(image.shape[-2:]) > pad else "replicate"
            padded = F.pad(image, (pad, pad, pad, pad), mode=mode) if pad else image
            maps.append(getattr(self, relu)(getattr(self, conv)(padded)))
        # the means last: a capture(..., stop=True) of the maps ends the forward before them
        return torch.cat([m.mean(dim=(2, 3)) for m in maps], dim=1)


def random_texture_net(kernels: tuple[int, ...] = (3, 5), levels: int = 4, channels: int = 64, seed: int = 0) -> RandomTextureNet:
    """Build a :class:`RandomTextureNet` in eval mode (random filters, nothing downloaded)."""
    return RandomTextureNet(kernels, levels, channels, seed).eval()
