"""The façade: ``explain(model)`` and one thin method per capability.

Each method converts inputs (:func:`cnn_explain._utils.as_batch`, the optional
``transform``), moves them to the explainer's device, and calls the capability's
own function, which is usable without the façade::

    explain(model).occlusion(x, target=3) == cnn_explain.attribution.occlusion(model, x, target=3)

Example:
    >>> from cnn_explain import explain
    >>> from cnn_explain.models import cifar10_cnn
    >>> ex = explain(cifar10_cnn())
    >>> ex.summary((3, 32, 32)).total_params
    550570
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._utils import as_batch, check_channels, model_device
from .hooks import LayerSpec, _check_model, preserved, select_output

__all__ = ["Explainer", "explain", "Prediction"]


@dataclass(frozen=True)
class Prediction:
    """Top-k predictions for a batch.

    Attributes:
        indices: ``(N, k)`` class indices, most probable first.
        probs: ``(N, k)`` softmax probabilities.
        labels: ``N`` lists of ``k`` class names (the indices as strings without names).
    """

    indices: torch.Tensor
    probs: torch.Tensor
    labels: list[list[str]]

    def __str__(self) -> str:
        lines = []
        for i, (labs, ps) in enumerate(zip(self.labels, self.probs.tolist())):
            lines.append(f"image {i}: " + ", ".join(f"{lab} {p:.1%}" for lab, p in zip(labs, ps)))
        return "\n".join(lines)


class Explainer:
    """Explains one model. Create it with :func:`explain`.

    Args:
        model: any ``nn.Module`` taking ``(N, C, H, W)`` images.
        class_names: optional names for the output classes (``len == num_classes``).
        transform: optional callable applied to each *raw* image (PIL image or
            NumPy array) before it reaches the model, e.g. resize + normalize;
            it must return a ``(C, H, W)`` tensor. Tensors given to the methods are
            taken as already preprocessed.
        device: where to run (default: the model's device). The model is never
            moved; inputs are.
        output: selector for models returning tuples or dicts (see
            :func:`cnn_explain.hooks.select_output`).
    """

    def __init__(self, model: nn.Module, *, class_names: Sequence[str] | None = None,
                 transform: Callable[[Any], torch.Tensor] | None = None,
                 device: str | torch.device | None = None, output: Any = None) -> None:
        self.model = _check_model(model)
        if class_names is not None and (isinstance(class_names, str) or not isinstance(class_names, Sequence)):
            raise TypeError("class_names must be a sequence of strings, one per class")
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        if transform is not None and not callable(transform):
            raise TypeError("transform must be callable (raw image -> (C, H, W) tensor)")
        self.transform = transform
        self.device = torch.device(device) if device is not None else model_device(model)
        self.output = output

    # ------------------------------------------------------------------ helpers
    def prepare(self, x: Any, *, argname: str = "x") -> torch.Tensor:
        """Convert ``x`` (tensor, PIL image, array, or a list of those) to an ``(N, C, H, W)`` batch on the device."""
        if isinstance(x, (list, tuple)) and x and not isinstance(x[0], (int, float)):
            x = torch.cat([self.prepare(item, argname=argname) for item in x])
        elif self.transform is not None and not isinstance(x, torch.Tensor):
            x = self.transform(x)
        x = as_batch(x, argname=argname).to(self.device)
        check_channels(self.model, x, argname=argname)
        return x

    def label(self, index: int) -> str:
        """The class name of ``index`` (or the index as a string)."""
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return self.class_names[index]
        return str(index)

    def __repr__(self) -> str:
        return f"Explainer({type(self.model).__name__}, device={self.device}, classes={len(self.class_names or []) or None})"

    # ------------------------------------------------------------------ foundation
    def summary(self, input_shape: Sequence[int] = (3, 32, 32)):
        """Per-layer table: shapes, neurons, parameters with their formula, receptive fields, MACs.

        See :func:`cnn_explain.summary.summarize`.
        """
        from .summary import summarize

        return summarize(self.model, input_shape, device=self.device)

    def predict(self, x: Any, k: int = 5) -> Prediction:
        """Top-``k`` classes and softmax probabilities for each image of ``x`` ``(N, C, H, W)``."""
        from ._utils import positive_int

        k = positive_int(k, "k")
        x = self.prepare(x)
        with preserved(self.model, eval=True), torch.inference_mode():
            logits = select_output(self.model(x), self.output)
        logits = logits.reshape(logits.shape[0], -1).float().cpu()
        k = min(k, logits.shape[1])
        probs, idx = logits.softmax(dim=1).topk(k, dim=1)
        labels = [[self.label(int(i)) for i in row] for row in idx]
        return Prediction(idx, probs, labels)

    def feature_maps(self, x: Any, layers: LayerSpec = None) -> dict[str, torch.Tensor]:
        """``{layer name: (N, C, H, W) tensor}`` for every chosen layer (default: conv/pool/linear/activations)."""
        from .features.maps import feature_maps

        return feature_maps(self.model, self.prepare(x), layers=layers)

    # ------------------------------------------------------------------ inside the network
    def filters(self, layer: LayerSpec = None):
        """Weights of a conv layer (first one by default). See :func:`cnn_explain.features.filters.filters`."""
        from .features.filters import filters

        return filters(self.model, layer=layer)

    def maximize(self, layer: LayerSpec, channels: Sequence[int] | int | None = None, *, steps: int = 256,
                 seed: int = 0, input_shape: Sequence[int] | None = None, **options: Any):
        """Images that maximize channels of ``layer``. See :func:`cnn_explain.features.maximize.maximize`."""
        from .features.maximize import maximize

        return maximize(self.model, layer, channels, steps=steps, seed=seed, input_shape=input_shape, **options)

    def arithmetic(self, x: Any, layer: LayerSpec, channel: int = 0, h: int | None = None, w: int | None = None):
        """The worked computation of one output value. See :func:`cnn_explain.features.arithmetic.arithmetic`."""
        from .features.arithmetic import arithmetic

        return arithmetic(self.model, self.prepare(x), layer, channel, h, w)

    def receptive_field(self, layer: LayerSpec, h: int, w: int, input_shape: Sequence[int] = (3, 32, 32)):
        """Inclusive input box seen by output ``(h, w)`` of ``layer``. See :func:`cnn_explain.layers.receptive_field`."""
        from .layers import receptive_field

        return receptive_field(self.model, layer, h, w, input_shape=input_shape)

    # ------------------------------------------------------------------ attribution
    def occlusion(self, x: Any, target: Any = None, **options: Any):
        """Occlusion heatmap (Zeiler & Fergus). See :func:`cnn_explain.attribution.occlusion`."""
        from .attribution.occlusion import occlusion

        return occlusion(self.model, self.prepare(x), target=target, **options)

    def saliency(self, x: Any, target: Any = None, method: str = "guided", **options: Any):
        """Gradient / guided-backprop / deconvnet saliency. See :func:`cnn_explain.attribution.saliency`."""
        from .attribution.gradients import saliency

        return saliency(self.model, self.prepare(x), target=target, method=method, **options)

    def grad_cam(self, x: Any, target: Any = None, layer: LayerSpec = None, guided: bool = False, **options: Any):
        """Grad-CAM (Selvaraju et al.). See :func:`cnn_explain.attribution.grad_cam`."""
        from .attribution.cam import grad_cam

        return grad_cam(self.model, self.prepare(x), target=target, layer=layer, guided=guided, **options)

    def sanity_check(self, x: Any, method: str = "guided", **options: Any):
        """Model-parameter randomization test (Adebayo et al.). See :func:`cnn_explain.attribution.sanity_check`."""
        from .attribution.sanity import sanity_check

        return sanity_check(self.model, self.prepare(x), method=method, **options)

    # ------------------------------------------------------------------ data-set level
    def embed(self, data: Any, layer: LayerSpec = None, method: str = "tsne", seed: int = 0, **options: Any):
        """PCA / t-SNE / UMAP map of a layer's features over ``data``. See :func:`cnn_explain.embedding.embed`."""
        from .embedding import embed

        options.setdefault("output", self.output)
        options.setdefault("device", self.device)
        return embed(self.model, data, layer=layer, method=method, seed=seed,
                     class_names=self.class_names, **options)

    def report(self, images: Any, data: Any = None, out: str = "report", **options: Any):
        """Write the HTML report with every figure. See :func:`cnn_explain.report.write_report`."""
        from .report import write_report

        return write_report(self, images, data=data, out=out, **options)


def explain(model: nn.Module, *, class_names: Sequence[str] | None = None,
            transform: Callable[[Any], torch.Tensor] | None = None,
            device: str | torch.device | None = None, output: Any = None) -> Explainer:
    """Wrap a model to explain it. See :class:`Explainer`.

    Example:
        >>> ex = explain(model, class_names=["cat", "dog"])   # doctest: +SKIP
        >>> ex.predict(image, k=2)                             # doctest: +SKIP
    """
    return Explainer(model, class_names=class_names, transform=transform, device=device, output=output)
