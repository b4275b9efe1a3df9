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


class RandomTextureNet(nn.Module):
    """Multi-scale random-filter feature extractor for texture/style synthesis.

    Parallel single conv layers with kernel sizes ``scales`` (each followed by
    ReLU), named ``conv{k}``, applied at full resolution; a fixed seed makes the
    filters reproducible. Output: the concatenation of all scales' maps,
    ``(N, sum(channels), H, W)``. Style and content layers are ``"conv3"``,
    ``"conv5"``, ...; the ReLUs are ``"relu3"``, ...
    """

    def __init__(self, scales: tuple[int, ...] = (3, 5, 7, 11), channels: int = 128, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.scales = tuple(scales)
        for k in self.scales:
            conv = nn.Conv2d(3, channels, k, padding=k // 2, padding_mode="reflect")
            with torch.no_grad():
                bound = (3.0 / (3 * k * k)) ** 0.5
                conv.weight.uniform_(-bound, bound, generator=g)
                conv.weight.sub_(conv.weight.mean(dim=(1, 2, 3), keepdim=True))  # zero-mean filters
                conv.bias.zero_()
            self.add_module(f"conv{k}", conv)
            self.add_module(f"relu{k}", nn.ReLU())
        for p in self.parameters():
            p.requires_grad_(False)

    @property
    def content_layers(self) -> list[str]:
        return [f"relu{self.scales[0]}"]

    @property
    def style_layers(self) -> list[str]:
        return [f"relu{k}" for k in self.scales]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [getattr(self, f"relu{k}")(getattr(self, f"conv{k}")(x)) for k in self.scales]
        return torch.cat(outs, dim=1)


def random_texture_net(scales: tuple[int, ...] = (3, 5, 7, 11), channels: int = 128, seed: int = 0) -> RandomTextureNet:
    """Build a :class:`RandomTextureNet` in eval mode (no downloaded weights needed)."""
    return RandomTextureNet(scales, channels, seed).eval()
