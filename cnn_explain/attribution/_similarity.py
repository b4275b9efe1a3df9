r"""Similarity of two saliency maps: Spearman rank correlation and SSIM.

* Spearman's $\rho$ is Pearson's correlation of the ranks, ties getting their
  average rank (computed by `scipy.stats.spearmanr`).
* SSIM (Wang et al. 2004, "Image quality assessment: from error visibility to
  structural similarity") with a Gaussian window (σ = 1.5, 11 × 11, shrunk to fit
  small maps), $C_1 = (0.01 L)^2$, $C_2 = (0.03 L)^2$, averaged over the
  positions where the window fits:

$$ \mathrm{SSIM}(a, b) = \frac{(2\mu_a\mu_b + C_1)(2\sigma_{ab} + C_2)}
   {(\mu_a^2 + \mu_b^2 + C_1)(\sigma_a^2 + \sigma_b^2 + C_2)} $$

Adebayo et al. 2018 compare maps this way, on absolute values normalized to [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["spearman", "ssim", "normalize"]


def spearman(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Spearman rank correlation of two equally sized maps, from :func:`scipy.stats.spearmanr`.

    Tied values get their average rank. NaN if one map is constant (no ranking to correlate).

    Raises:
        ValueError: the maps hold different numbers of values.
    """
    from scipy.stats import spearmanr

    a = np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64).ravel()
    b = np.asarray(b.detach().cpu() if isinstance(b, torch.Tensor) else b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"maps differ in size: {a.size} and {b.size} values")
    if a.size < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")  # scipy would say the same, with a ConstantInputWarning
    return float(spearmanr(a, b).statistic)


def normalize(m: torch.Tensor) -> torch.Tensor:
    """Scale a map to [0, 1] by its min and max (a constant map becomes zeros)."""
    m = m.double()
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo) if hi > lo else torch.zeros_like(m)


def _window(size: int, sigma: float) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(r * r) / (2 * sigma * sigma))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(a: torch.Tensor, b: torch.Tensor, *, window: int = 11, sigma: float = 1.5,
         data_range: float = 1.0) -> float:
    """Mean SSIM of two ``(H, W)`` maps (already scaled to a common ``data_range``)."""
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"ssim needs two (H, W) maps of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    size = min(window, a.shape[0], a.shape[1])
    size -= 1 - size % 2  # odd
    w = _window(size, sigma)[None, None]
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    stack = torch.stack([a, b, a * a, b * b, a * b])[:, None]
    mu_a, mu_b, e_aa, e_bb, e_ab = F.conv2d(stack, w)[:, 0]
    var_a, var_b, cov = e_aa - mu_a ** 2, e_bb - mu_b ** 2, e_ab - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)
    return float((num / den).mean())
