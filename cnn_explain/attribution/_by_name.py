"""Attribution maps by method name: the one table the sanity check and deletion / insertion share.

Names:

* ``"gradient"``, ``"guided"``, ``"deconv"``: `cnn_explain.attribution.saliency`;
* ``"grad_cam"``, ``"guided_grad_cam"``: `cnn_explain.attribution.grad_cam`;
* ``"integrated_gradients"`` (or ``"ig"``): `cnn_explain.attribution.integrated_gradients.integrated_gradients`;
* every `~cnn_explain.attribution.cam_family.CamMethod` name (``"grad-cam"``,
  ``"grad-cam++"``, ``"score-cam"``, ...): `cnn_explain.attribution.cam_family.cam`.

Example:
    >>> canonical("ig"), canonical("grad-cam++")
    ('integrated_gradients', 'grad-cam++')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .cam import grad_cam
from .cam_family import CamMethod, cam
from .gradients import METHODS, saliency
from .integrated_gradients import integrated_gradients
from .result import Attribution

__all__ = ["METHOD_NAMES", "ALIASES", "canonical", "compute"]

IG = "integrated_gradients"
#: short names accepted for a method
ALIASES = {"ig": IG}
#: every method name this module computes, canonical names first
METHOD_NAMES: tuple[str, ...] = (METHODS + ("grad_cam", "guided_grad_cam", IG)
                                 + tuple(m.value for m in CamMethod) + tuple(ALIASES))


def canonical(method: Any, argname: str = "method") -> str:
    """``method`` as its canonical name (``"ig"`` -> ``"integrated_gradients"``).

    Raises:
        ValueError: not one of `METHOD_NAMES` (the message lists them).
    """
    if isinstance(method, CamMethod):
        return method.value
    if not isinstance(method, str) or method not in METHOD_NAMES:
        raise ValueError(f"{argname} must be one of {', '.join(map(repr, METHOD_NAMES))}, got {method!r}")
    return ALIASES.get(method, method)


def compute(model: nn.Module, x: torch.Tensor, target: Any, method: str, output: Any = None,
            options: Mapping[str, Any] | None = None) -> Attribution:
    """The attribution result of ``method`` for images ``x`` ``(N, C, H, W)``, without a progress bar.

    Args:
        model: the classifier.
        x: images ``(N, C, H, W)``.
        target: class per image (int, list, ``(N,)`` tensor) or None (the predicted class).
        method: a name of `METHOD_NAMES`.
        output: selects the score tensor from a model returning a tuple/dict.
        options: keyword arguments of the method's own function (e.g. ``{"steps": 32}``
            for Integrated Gradients, ``{"layer": "conv2"}`` for a CAM); the function
            checks them.

    Returns:
        The method's result (an `Attribution`; ``.attribution`` is ``(N, C, H, W)``,
        ``C = 1`` for the CAM family).
    """
    name = canonical(method)
    opts = dict(options or {})
    if name in METHODS:
        return saliency(model, x, target=target, method=name, output=output, progress=False, **opts)
    if name in ("grad_cam", "guided_grad_cam"):
        return grad_cam(model, x, target=target, guided=name == "guided_grad_cam", output=output, **opts)
    if name == IG:
        return integrated_gradients(model, x, target=target, output=output, progress=False, **opts)
    return cam(model, x, target=target, method=name, output=output, progress=False, **opts)
