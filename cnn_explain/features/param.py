"""Image parameterizations and random transforms for activation maximization.

A parameterization returns ``(params, to_image)``: ``params`` is the one tensor the
optimizer changes, ``to_image()`` builds ``(B, C, H, W)`` images in ``[0, 1]`` from it.

* :func:`pixel_image` — the pixels themselves (Erhan et al. 2009);
* :func:`fourier_image` — the image's 2-D Fourier spectrum, scaled by ``1/f``
  so that every frequency starts with equal energy, and colours decorrelated with
  the ImageNet colour-correlation square root used by Lucid / lucent
  (Olah et al. 2017, "Feature Visualization", section "Preconditioning").
  Gray (or non-RGB) images skip the colour step (identity).

Transforms (:func:`jitter`, :func:`random_scale`, :func:`random_rotate`) are drawn
afresh at every step so the image must keep working when shifted, scaled and
rotated a little ("transformation robustness"); they are composed into one affine
map per image and applied with one ``F.affine_grid`` / ``F.grid_sample`` call.

All randomness comes from one ``torch.Generator`` **per image**, seeded from
``(seed, channel)`` by :func:`image_generators`; the global RNG is never used. So
an image is the same whether it is optimized alone or in a batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "COLOR_CORRELATION",
    "image_generators",
    "pixel_image",
    "fourier_image",
    "Transform",
    "jitter",
    "random_scale",
    "random_rotate",
    "default_transforms",
    "apply_transforms",
]

# Square root of the ImageNet RGB colour covariance (Lucid / lucent), columns scaled to max norm 1.
_SVD_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_CORRELATION = _SVD_SQRT / _SVD_SQRT.norm(dim=0).max()

Param = tuple[torch.Tensor, Callable[[], torch.Tensor]]


def image_generators(seed: int, channels: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per image, seeded from ``(seed, channel)`` (NumPy ``SeedSequence`` mixing)."""
    gens = []
    for ch in channels:
        state = int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(ch)]).generate_state(1, np.uint64)[0])
        gens.append(torch.Generator().manual_seed(state & 0x7FFFFFFFFFFFFFFF))
    return gens


def _randn(shape: Sequence[int], gens: list[torch.Generator], device) -> torch.Tensor:
    return torch.stack([torch.randn(*shape, generator=g) for g in gens]).to(device)


def _to_valid(raw: torch.Tensor, decorrelate: bool) -> torch.Tensor:
    if decorrelate and raw.shape[1] == 3:
        raw = torch.einsum("bchw,dc->bdhw", raw, COLOR_CORRELATION.to(raw))
    return torch.sigmoid(raw)


def pixel_image(shape: Sequence[int], gens: list[torch.Generator], *, sd: float = 0.01,
                decorrelate: bool = True, device: torch.device | str = "cpu") -> Param:
    """Pixel parameterization: ``image = sigmoid(decorrelate(p))``, ``p ~ N(0, sd²)`` of shape ``(B, C, H, W)``.

    Args:
        shape: ``(C, H, W)`` of one image; ``B = len(gens)``.
        gens: one generator per image (:func:`image_generators`).
    """
    params = (_randn(shape, gens, device) * sd).requires_grad_(True)
    return params, lambda: _to_valid(params, decorrelate)


def _freqs(h: int, w: int) -> torch.Tensor:
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    return torch.from_numpy(np.sqrt(fx * fx + fy * fy)).float()


def fourier_image(shape: Sequence[int], gens: list[torch.Generator], *, sd: float = 0.01, decay_power: float = 1.0,
                  decorrelate: bool = True, device: torch.device | str = "cpu") -> Param:
    """Spectral parameterization (Olah et al. 2017): the image is the inverse real FFT of a scaled spectrum.

    ``image = sigmoid(decorrelate(irfft2(s ⊙ P) / 4))`` with ``s = 1 / max(f, 1/max(H, W))^decay_power``,
    ``P`` the learned real and imaginary parts ``(B, C, H, W//2 + 1, 2)``, ``irfft2`` orthonormal.
    Low frequencies get large steps and high ones small, so the optimization is
    preconditioned towards natural-looking images.
    """
    c, h, w = shape
    scale = (1.0 / _freqs(h, w).clamp(min=1.0 / max(h, w)) ** decay_power).to(device)[None, None, ..., None]
    params = (_randn((c, h, w // 2 + 1, 2), gens, device) * sd).requires_grad_(True)

    def to_image() -> torch.Tensor:
        spectrum = torch.view_as_complex((scale * params).contiguous())
        raw = torch.fft.irfftn(spectrum, s=(h, w), norm="ortho") / 4.0  # 4: Lucid's constant, less saturation
        return _to_valid(raw, decorrelate)

    return params, to_image


# --------------------------------------------------------------------------- transforms
@dataclass(frozen=True)
class Transform:
    """One random geometric transform, sampled per image per step.

    ``kind`` is ``"jitter"`` (``amount`` = max shift in pixels), ``"scale"``
    (``amount`` = ``(low, high)`` zoom factors) or ``"rotate"`` (``amount`` = max degrees).
    """

    kind: str
    amount: float | tuple[float, float]

    def matrix(self, g: torch.Generator, h: int, w: int) -> torch.Tensor:
        """A 3×3 affine matrix in ``affine_grid``'s normalized coordinates (x = width first)."""
        m = torch.eye(3, dtype=torch.float64)
        u = float(torch.rand((), generator=g))
        if self.kind == "jitter":
            p = int(self.amount)
            v = float(torch.rand((), generator=g))
            dx, dy = round((2 * u - 1) * p), round((2 * v - 1) * p)
            m[0, 2], m[1, 2] = 2.0 * dx / w, 2.0 * dy / h
        elif self.kind == "scale":
            lo, hi = self.amount
            m[0, 0] = m[1, 1] = 1.0 / (lo + (hi - lo) * u)
        else:
            a = math.radians((2 * u - 1) * float(self.amount))
            # rotation in pixel space, written in normalized coordinates: D⁻¹ R D with D = diag(W/2, H/2)
            m[0, 0], m[0, 1] = math.cos(a), -math.sin(a) * h / w
            m[1, 0], m[1, 1] = math.sin(a) * w / h, math.cos(a)
        return m


def jitter(pixels: int = 4) -> Transform:
    """Random shift by up to ``pixels`` in each direction (whole pixels)."""
    return Transform("jitter", int(pixels))


def random_scale(low: float = 0.9, high: float = 1.1) -> Transform:
    """Random zoom by a factor drawn uniformly from ``[low, high]``."""
    if not 0 < low <= high:
        raise ValueError(f"random_scale needs 0 < low <= high, got ({low}, {high})")
    return Transform("scale", (float(low), float(high)))


def random_rotate(degrees: float = 10.0) -> Transform:
    """Random rotation by an angle drawn uniformly from ``[-degrees, degrees]``."""
    return Transform("rotate", float(degrees))


def default_transforms() -> tuple[Transform, ...]:
    """``(jitter(4), random_scale(0.9, 1.1), random_rotate(10), jitter(2))``."""
    return (jitter(4), random_scale(0.9, 1.1), random_rotate(10.0), jitter(2))


def apply_transforms(images: torch.Tensor, transforms: Sequence[Transform], gens: list[torch.Generator]) -> torch.Tensor:
    """Apply the transforms, composed in order, to each image with its own generator.

    One bilinear ``grid_sample`` (reflection at the borders) for the whole batch.
    """
    if not transforms:
        return images
    b, _, h, w = images.shape
    thetas = []
    for g in gens:
        m = torch.eye(3, dtype=torch.float64)
        for t in transforms:
            m = t.matrix(g, h, w) @ m
        thetas.append(m[:2])
    theta = torch.stack(thetas).to(images)
    grid = F.affine_grid(theta, [b, images.shape[1], h, w], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
