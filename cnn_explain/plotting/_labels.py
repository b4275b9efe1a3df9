"""What a figure's text says: class names, image labels and what an attribution map's colour means."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["check_names", "class_label", "image_label", "meaning"]


def check_names(values: Sequence[str] | None, argname: str) -> list[str] | None:
    """``values`` as a list of strings, or ``None``.

    Raises:
        TypeError: a bare string or a non-sequence (``class_names=["cat", "dog"]`` works).
    """
    if values is None:
        return None
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise TypeError(f"{argname} must be a sequence of strings (e.g. [\"cat\", \"dog\"]), "
                        f"got {type(values).__name__}")
    return [str(v) for v in values]


def class_label(target: int, class_names: Sequence[str] | None) -> str:
    """``"truck"`` when ``class_names`` names class ``target``, else ``"class 9"``."""
    if class_names is not None and 0 <= target < len(class_names):
        return str(class_names[target])
    return f"class {target}"


def image_label(index: int, labels: Sequence[str] | None) -> str:
    """``labels[index]`` (e.g. a file name) when given, else ``"image 3"``."""
    if labels is not None and 0 <= index < len(labels):
        return str(labels[index])
    return f"image {index}"


def _score(result: Any, cls: str) -> str:
    return f"P({cls})" if getattr(result, "measure", "logit") == "prob" else f"logit of {cls}"


def meaning(result: Any, cls: str) -> str:
    """What the colour of ``result``'s map is, in words, for the class named ``cls``.

    E.g. ``"drop of P(truck) when this patch is grey"``, ``"|∂ score / ∂ pixel|"``,
    ``"Grad-CAM at layer layer4"``.
    """
    method = str(getattr(result, "method", ""))
    params = getattr(result, "params", {}) or {}
    layer = getattr(result, "layer", None)
    if method == "occlusion":
        base = getattr(result, "baseline", params.get("baseline"))
        cover = {"mean": "set to the image's mean", "blur": "blurred"}.get(base, "replaced") \
            if isinstance(base, str) else f"set to {base:g}" if isinstance(base, (int, float)) else "covered"
        return f"drop of {_score(result, cls)} when this patch is {cover}"
    if method in ("gradient", "smoothgrad"):
        return "|∂ score / ∂ pixel|" if params.get("abs", True) else "∂ score / ∂ pixel"
    if method in ("guided", "deconv"):
        name = "guided backprop" if method == "guided" else "deconvnet"
        return f"{name}: {'|∂ score / ∂ pixel|' if params.get('abs', True) else '∂ score / ∂ pixel'}"
    if "cam" in method:
        pretty = {"grad_cam": "Grad-CAM", "guided_grad_cam": "guided Grad-CAM"}.get(method, method)
        return f"{pretty} at layer {layer}" if layer else pretty
    if "integrated" in method or method.startswith("ig"):
        return "integrated gradients: (x − baseline) · mean ∂ score / ∂ pixel"
    return method or "attribution"
