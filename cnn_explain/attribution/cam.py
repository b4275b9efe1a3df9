r"""Grad-CAM and guided Grad-CAM (Selvaraju et al. 2017, "Grad-CAM: Visual Explanations
from Deep Networks via Gradient-based Localization").

For the feature maps $A^k$ (`(N, K, h, w)`) of a conv layer and the class score $S_c$:

$$ \alpha_k^c = \frac{1}{hw}\sum_{i,j} \frac{\partial S_c}{\partial A^k_{ij}}, \qquad
   L^c = \mathrm{ReLU}\Big(\sum_k \alpha_k^c A^k\Big) $$

$L^c$ (`(N, 1, h, w)`, kept as `result.cam`) is upsampled bilinearly to the
input size (`align_corners=False`, as captum's
`LayerAttribution.interpolate(..., "bilinear")`) to give `result.attribution`
`(N, 1, H, W)`. Guided Grad-CAM multiplies guided backprop (signed,
`(N, C, H, W)`) by the upsampled map, as captum's `GuidedGradCam` does.

Example:
    >>> from cnn_explain.models import tiny_vgg
    >>> from cnn_explain.attribution import grad_cam
    >>> r = grad_cam(tiny_vgg().eval(), torch.rand(1, 3, 16, 16))
    >>> r.layer, r.cam.shape, r.attribution.shape
    ('features', torch.Size([1, 1, 4, 4]), torch.Size([1, 1, 16, 16]))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .._utils import forward_logits, model_input, resolve_target
from ..hooks import LayerSpec, capture, preserved, resolve_layer
from ..roles import classifier_input, last_conv
from .gradients import saliency
from .result import Attribution

__all__ = ["grad_cam", "GradCam"]


@dataclass(frozen=True, eq=False)
class GradCam(Attribution):
    """A Grad-CAM result (see `~cnn_explain.attribution.result.Attribution`).

    Attributes:
        attribution: ``(N, 1, H, W)`` Grad-CAM upsampled to the input (``(N, C, H, W)``
            for guided Grad-CAM).
        cam: ``(N, 1, h, w)`` Grad-CAM at the layer's resolution.
        weights: ``(N, K)`` channel weights $\\alpha_k^c$ (the spatial mean of the gradients).
        layer: the layer used, as ``layer=`` accepts it (``name#k`` if it was the
            module's k-th call; ``"name (input)"`` when the map is the input of
            the module ``name``).
        relu_calls: ReLU calls rectified by guided backprop (guided Grad-CAM only).
    """

    cam: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    layer: str = ""
    relu_calls: int = 0


@dataclass(frozen=True)
class CamLayer:
    """Where Grad-CAM reads its feature map: a layer name (selector included) and whether it is the input."""

    name: str
    input: bool = False


def cam_layer(model: nn.Module, x: torch.Tensor, layer: LayerSpec | CamLayer) -> CamLayer:
    """The chosen layer, or the default: the map feeding the spatial collapse (else the last conv run).

    A `CamLayer` (one found before for the same model and input shape) is taken as it is.
    """
    if isinstance(layer, CamLayer):
        return layer
    if layer is not None:
        return CamLayer(resolve_layer(model, layer, argname="layer")[0])
    try:
        site = classifier_input(model, x[:1])
    except ValueError:  # the collapsed map is made by a function and read by no module
        site = last_conv(model, x[:1])
    return CamLayer(site.name, site.input)


class CamPass(NamedTuple):
    """What one forward + backward at a CAM layer gives (the last call of the layer recorded)."""

    key: str  # the layer's recorded name (`` (input)`` appended for an input site)
    acts: torch.Tensor  # A, (N, K, h, w)
    grads: torch.Tensor  # dS_c/dA
    target: torch.Tensor  # (N,) the classes
    logits: torch.Tensor  # (N, classes) the forward's scores, detached


def cam_pass(model: nn.Module, x: torch.Tensor, target: Any, layer: CamLayer, output: Any) -> CamPass:
    """Forward + backward at ``layer`` for the ``target`` classes (None: the predicted ones)."""
    with torch.inference_mode(False), torch.enable_grad(), \
            capture(model, layer.name, grads=True, inputs=layer.input, keep_outputs=not layer.input) as rec:
        leaf = x.detach().clone().requires_grad_(True)
        logits = forward_logits(model, leaf.clone(), output)
        calls = list(rec.inputs if layer.input else rec.outputs)
        if not calls:
            raise ValueError(f"layer {layer.name!r} was not called in the forward pass")
        key = calls[-1]  # the last call executed (execution order, not module order)
        acts = rec.live(key, input=layer.input)
        if acts.dim() != 4:
            raise ValueError(f"layer {key!r} outputs shape {tuple(acts.shape)}; Grad-CAM needs an "
                             "(N, C, h, w) feature map: pass layer=<a conv layer>")
        tgt = resolve_target(target, logits).clone()  # never an inference tensor
        score = logits.gather(1, tgt.to(logits.device)[:, None]).sum()
        (grads,) = torch.autograd.grad(score, acts)
    return CamPass(f"{key} (input)" if layer.input else key, acts.detach(), grads.detach(), tgt, logits.detach())


def grad_cam(model: nn.Module, x: Any, *, target: Any = None, layer: LayerSpec = None,
             guided: bool = False, output: Any = None) -> GradCam:
    """Grad-CAM of the target class at ``layer``, upsampled to the input size.

    The model runs in eval mode with frozen parameters (flags and ``.grad`` put
    back afterwards); no hook is left behind, also after an exception.

    Args:
        model: a CNN returning ``(N, num_classes)`` scores.
        x: images ``(N, C, H, W)`` (a single ``(C, H, W)`` image gets a batch of 1).
        target: class per image: int, list of ints, or None (the predicted class).
        layer: the layer whose feature maps are weighted (module, dotted name,
            glob, type; a layer returning a tuple, dict or dataclass with a
            selector, e.g. ``"stage2.last_hidden_state"``, see
            :func:`cnn_explain.hooks.resolve_layer`). Default:
            :func:`cnn_explain.roles.classifier_input`, the feature map that feeds
            the global pooling / flatten before the classifier on the main path
            (on a ResNet the last block's output, never its shortcut's 1×1
            projection; read as the input of the pooling module when a function
            in ``forward`` produced it); when no module holds that map, the
            convolution *executed* last (:func:`cnn_explain.roles.last_conv`).
            For a module called several times, its last call is used. The
            layer used is ``result.layer``.
        guided: multiply by guided backprop (guided Grad-CAM, ``(N, C, H, W)``).
        output: selects the score tensor from a model returning a tuple/dict.

    Returns:
        `GradCam` with ``.attribution`` ``(N, 1, H, W)`` (``(N, C, H, W)``
        if guided), ``.cam`` ``(N, 1, h, w)``, ``.weights`` ``(N, K)``, ``.layer``,
        ``.target``, ``.method`` (``"grad_cam"`` or ``"guided_grad_cam"``).

    Raises:
        ValueError: no convolution runs (with ``layer=None``), a layer that is not a
            feature map, a layer whose output is not a tensor and has no selector
            (the message names the layer, the type it returned and what to pass),
            a bad ``target``.

    Example:
        >>> r = grad_cam(model, images, target=3, layer="features.7")   # doctest: +SKIP
    """
    return grad_cam_and_logits(model, x, target=target, layer=layer, guided=guided, output=output)[0]


def grad_cam_and_logits(model: nn.Module, x: Any, *, target: Any = None, layer: LayerSpec | CamLayer = None,
                        guided: bool = False, output: Any = None) -> tuple[GradCam, torch.Tensor]:
    """:func:`grad_cam`, and the ``(N, classes)`` scores of the forward pass it ran (detached).

    ``layer`` may also be a `CamLayer` found before (:func:`cam_layer`), which skips the probe forward.

    The data-set runner reads its predictions there instead of running the model once more.
    """
    if not isinstance(guided, bool):
        raise TypeError(f"guided must be True or False, got {type(guided).__name__}")
    x = model_input(model, x)
    with preserved(model, eval=True, freeze=True):  # one hold of the model's lock for the whole call
        key, acts, grads, tgt, logits = cam_pass(model, x, target, cam_layer(model, x, layer), output)
        weights = grads.mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((weights * acts).sum(dim=1, keepdim=True))
        up = F.interpolate(cam, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
        method, calls = "grad_cam", 0
        if guided:
            gb = saliency(model, x, target=tgt, method="guided", abs=False, output=output)
            up, method, calls = gb.attribution.to(up.device) * up, "guided_grad_cam", gb.relu_calls
    return GradCam(up, tgt, method, inputs=x, params={"guided": guided}, cam=cam.cpu(),
                   weights=weights.flatten(1).cpu(), layer=key, relu_calls=calls), logits
