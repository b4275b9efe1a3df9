"""The façade: ``explain(model)`` and one thin method per capability.

Each method converts inputs (:func:`cnn_explain._utils.model_input`: ``to_batch``
with the optional ``transform``, in the model's dtype, on the explainer's device),
translates class names given as ``target`` to indices, and calls the capability's
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

import difflib
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ._utils import check_device, model_device, model_input, positive_int
from .hooks import LayerSpec, _check_model, preserved, select_output
from .prediction import Prediction

if TYPE_CHECKING:  # result types, for annotations only: importing them would load every capability
    from .attribution.cam import GradCam
    from .attribution.cam_family import CamMethod
    from .attribution.gradients import Saliency
    from .attribution.integrated_gradients import IGMethod, IntegratedGradients
    from .attribution.occlude import OcclusionResult
    from .attribution.sanity import SanityResult
    from .embedding import Embedding
    from .features.arithmetic import Arithmetic
    from .features.filters import FilterResult
    from .features.maximize import MaximizeResult
    from .features.param import Transform
    from .layers import Box
    from .objectives import Objective
    from .report import ReportResult, ReportSettings
    from .summary import Summary

__all__ = ["Explainer", "explain", "Prediction"]


class Explainer:
    """Explains one model. Create it with :func:`explain`.

    Args:
        model: any ``nn.Module`` taking ``(N, C, H, W)`` images.
        class_names: optional names for the output classes (``len == num_classes``);
            with them, ``target=`` of every method also takes a class name or a
            list of names / indices, one per image (``target="cat"``).
        transform: optional callable applied to each *raw* image (PIL image,
            NumPy array, or the image read from a path) before it reaches the
            model, e.g. resize + normalize; it must return a ``(C, H, W)`` tensor.
            Tensors given to the methods are taken as already preprocessed.
        device: where to run (default: the model's device), a device this
            machine has (else a ``ValueError`` listing those it has). The model
            is never moved; inputs are.
        output: selector for models returning tuples or dicts (see
            :func:`cnn_explain.hooks.select_output`); passed on to every
            capability that takes ``output=``.

    Every method has the signature and defaults of the function it calls (see
    each method), plus the explainer's input conversion, device and ``output``.
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
        self.device = check_device(device) if device is not None else model_device(model)
        self.output = output

    # ------------------------------------------------------------------ helpers
    def prepare(self, x: Any, *, argname: str = "x") -> torch.Tensor:
        """``x`` as an ``(N, C, H, W)`` batch on the device, checked against the model's first conv.

        ``x`` is anything :func:`cnn_explain.images.to_batch` takes (tensor, PIL
        image, array, image path, or a list of those); the explainer's
        ``transform`` is applied to each raw (non-tensor) image. The batch is in
        the model's floating dtype and every value must be finite (see
        :func:`cnn_explain._utils.model_input`).
        """
        return model_input(self.model, x, argname=argname, transform=self.transform, device=self.device)

    def _targets(self, target: Any, argname: str = "target") -> Any:
        """Class names in ``target`` (a name, or a list with names) -> their indices; the rest is passed on.

        Raises:
            ValueError: a name while the explainer has no ``class_names``, or an
                unknown name (the message lists close matches).
        """
        if isinstance(target, str):
            return self._class_index(target, argname)
        if isinstance(target, (list, tuple)) and any(isinstance(t, str) for t in target):
            return [self._class_index(t, f"{argname}[{i}]") if isinstance(t, str) else t for i, t in enumerate(target)]
        return target

    def _class_index(self, name: str, argname: str) -> int:
        if self.class_names is None:
            raise ValueError(f"{argname}={name!r} is a class name, but this explainer has no class names; "
                             "create it with explain(model, class_names=[...]) or give a class index")
        if name in self.class_names:
            return self.class_names.index(name)
        close = difflib.get_close_matches(name, self.class_names, n=3)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else \
            f"; the {len(self.class_names)} classes start {self.class_names[:5]}"
        raise ValueError(f"{argname}={name!r} is not one of the explainer's class names{hint}")

    def label(self, index: int) -> str:
        """The class name of ``index`` (or the index as a string)."""
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return self.class_names[index]
        return str(index)

    def __repr__(self) -> str:
        return f"Explainer({type(self.model).__name__}, device={self.device}, classes={len(self.class_names or []) or None})"

    # ------------------------------------------------------------------ foundation
    def summary(self, input_shape: Sequence[int] = (3, 32, 32)) -> Summary:
        """Per-layer table: shapes, neurons, parameters with their formula, receptive fields, MACs.

        See :func:`cnn_explain.summary.summarize`.
        """
        from .summary import summarize

        return summarize(self.model, input_shape, device=self.device)

    def predict(self, x: Any, k: int = 5) -> Prediction:
        """Top-``k`` classes and softmax probabilities for each image of ``x`` ``(N, C, H, W)``."""
        k = positive_int(k, "k")
        x = self.prepare(x)
        with preserved(self.model, eval=True), torch.inference_mode():
            logits = select_output(self.model(x), self.output)
        logits = logits.reshape(logits.shape[0], -1).cpu()
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # float64 stays float64
        k = min(k, logits.shape[1])
        probs, idx = logits.softmax(dim=1).topk(k, dim=1)
        labels = [[self.label(int(i)) for i in row] for row in idx]
        return Prediction(idx, probs, labels)

    def feature_maps(self, x: Any, layers: LayerSpec = None) -> dict[str, torch.Tensor]:
        """``{layer name: (N, C, H, W) tensor}`` for every chosen layer. See :func:`cnn_explain.features.feature_maps`."""
        from .features.maps import feature_maps

        return feature_maps(self.model, self.prepare(x), layers=layers, output=self.output)

    # ------------------------------------------------------------------ inside the network
    def filters(self, layer: LayerSpec = None) -> FilterResult:
        """Weights of a conv layer (first one by default). See :func:`cnn_explain.features.filters`."""
        from .features.filters import filters

        return filters(self.model, layer=layer)

    def maximize(self, layer: LayerSpec, channels: int | Sequence[int] | None = None, *, steps: int = 256,
                 seed: int = 0, input_shape: Sequence[int] | None = None, objective: Objective | None = None,
                 param: str = "fourier", lr: float = 0.05, transforms: Sequence[Transform] | None = None,
                 tv: float = 0.0, l2: float = 0.0, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, decorrelate: bool = True, progress: bool = True,
                 batch_size: int | None = None) -> MaximizeResult:
        """Images that maximize channels of ``layer``. See :func:`cnn_explain.features.maximize`."""
        from .features.maximize import maximize

        return maximize(self.model, layer, channels, steps=steps, seed=seed, input_shape=input_shape,
                        objective=objective, param=param, lr=lr, transforms=transforms, tv=tv, l2=l2, mean=mean,
                        std=std, decorrelate=decorrelate, progress=progress, batch_size=batch_size)

    def arithmetic(self, x: Any, layer: LayerSpec, channel: int = 0, h: int | None = None, w: int | None = None,
                   *, index: int = 0) -> Arithmetic:
        """The worked computation of one output value. See :func:`cnn_explain.features.arithmetic`."""
        from .features.arithmetic import arithmetic

        return arithmetic(self.model, self.prepare(x), layer, channel, h, w, index=index)

    def receptive_field(self, layer: LayerSpec, h: int, w: int, *, input_shape: Sequence[int] | None = None) -> Box:
        """Inclusive input box seen by output ``(h, w)`` of ``layer``. See :func:`cnn_explain.layers.receptive_field`."""
        from .layers import receptive_field

        return receptive_field(self.model, layer, h, w, input_shape=input_shape)

    # ------------------------------------------------------------------ attribution
    def occlusion(self, x: Any, target: Any = None, *, window: int | tuple[int, int] = 8,
                  stride: int | tuple[int, int] = 4, baseline: float | str | torch.Tensor = 0.0,
                  measure: str = "prob", mode: str = "exact", batch_size: int | None = None,
                  memory_budget: int = 2**30, progress: bool = True, approx_tau: float | None = 0.75,
                  approx_drill: float = 0.2, approx_precision: str = "auto",
                  compare_exact: bool = False, winograd: bool | None = None) -> OcclusionResult:
        """Occlusion heatmap (Zeiler & Fergus). See :func:`cnn_explain.attribution.occlusion`."""
        from .attribution import occlusion

        return occlusion(self.model, self.prepare(x), target=self._targets(target), window=window,
                         stride=stride, baseline=baseline, measure=measure, mode=mode, batch_size=batch_size,
                         memory_budget=memory_budget, progress=progress, output=self.output, approx_tau=approx_tau,
                         approx_drill=approx_drill, approx_precision=approx_precision, compare_exact=compare_exact,
                         winograd=winograd)

    def saliency(self, x: Any, target: Any = None, method: str = "gradient", *, abs: bool = True, smooth: int = 0,
                 noise: float = 0.15, seed: int = 0, progress: bool = True) -> Saliency:
        """Gradient / guided-backprop / deconvnet saliency. See :func:`cnn_explain.attribution.saliency`."""
        from .attribution import saliency

        return saliency(self.model, self.prepare(x), target=self._targets(target), method=method, abs=abs,
                        smooth=smooth, noise=noise, seed=seed, output=self.output, progress=progress)

    def grad_cam(self, x: Any, target: Any = None, layer: LayerSpec = None, guided: bool = False) -> GradCam:
        """Grad-CAM (Selvaraju et al.). See :func:`cnn_explain.attribution.grad_cam`."""
        from .attribution import grad_cam

        return grad_cam(self.model, self.prepare(x), target=self._targets(target), layer=layer, guided=guided,
                        output=self.output)

    def integrated_gradients(self, x: Any, target: Any = None, *, baseline: float | str | torch.Tensor = 0.0,
                             steps: int = 64, method: IGMethod | str = "gausslegendre",
                             internal_batch_size: int | None = None, memory_budget: int | None = None,
                             exact: bool = False, progress: bool = True) -> IntegratedGradients:
        """Integrated Gradients (Sundararajan et al.), ``exact=True`` for piecewise-linear nets.

        See :func:`cnn_explain.attribution.integrated_gradients.integrated_gradients`.
        """
        from .attribution.integrated_gradients import integrated_gradients

        return integrated_gradients(self.model, self.prepare(x), target=self._targets(target), baseline=baseline,
                                    steps=steps, method=method, internal_batch_size=internal_batch_size,
                                    memory_budget=memory_budget, exact=exact, output=self.output, progress=progress)

    def cam(self, x: Any, target: Any = None, layer: LayerSpec = None, method: CamMethod | str = "grad-cam", *,
            samples: int | None = None, noise: float | None = None, seed: int = 0, batch_size: int = 64,
            progress: bool = True, precision: str = "exact") -> GradCam:
        """A CAM-family map: Grad-CAM++, Score-CAM, Layer-CAM, ...

        See :func:`cnn_explain.attribution.cam_family.cam`.
        """
        from .attribution.cam_family import cam

        return cam(self.model, self.prepare(x), target=self._targets(target), layer=layer, method=method,
                   samples=samples, noise=noise, seed=seed, batch_size=batch_size, output=self.output,
                   progress=progress, precision=precision)

    def sanity_check(self, x: Any, method: str = "guided", target: Any = None, *, order: str = "top-down",
                     layers: LayerSpec = None, seed: int = 0, progress: bool = True, abs: bool = True,
                     smooth: int = 0, noise: float = 0.15, cam_layer: LayerSpec = None,
                     ig_steps: int = 64) -> SanityResult:
        """Model-parameter randomization test (Adebayo et al.). See :func:`cnn_explain.attribution.sanity_check`.

        ``method`` also takes ``"integrated_gradients"`` (``"ig"``) and the CAM family's names (``"grad-cam++"``).
        """
        from .attribution import sanity_check

        return sanity_check(self.model, self.prepare(x), method=method, target=self._targets(target), order=order,
                            layers=layers, seed=seed, output=self.output, progress=progress, abs=abs, smooth=smooth,
                            noise=noise, cam_layer=cam_layer, ig_steps=ig_steps)

    # ------------------------------------------------------------------ data-set level
    def embed(self, data: Any, layer: LayerSpec = None, method: str = "tsne", seed: int | None = 0, *,
              pool: str = "avg", batch_size: int = 256, max_samples: int | None = None, progress: bool = True,
              layer_input: bool | None = None, n_components: int = 2, backend: str = "auto",
              projection: Mapping[str, Any] | None = None) -> Embedding:
        """PCA / t-SNE / UMAP map of a layer's features over ``data``. See :func:`cnn_explain.embedding.embed`.

        ``projection`` holds method-specific options of :func:`cnn_explain.embedding.project`
        (``perplexity``, ``n_neighbors``, ...).
        """
        from .embedding import embed

        return embed(self.model, data, layer=layer, method=method, seed=seed, class_names=self.class_names,
                     pool=pool, batch_size=batch_size, max_samples=max_samples, progress=progress,
                     output=self.output, device=self.device, layer_input=layer_input, n_components=n_components,
                     backend=backend, **dict(projection or {}))

    def report(self, images: Any, data: Any = None, out: str | os.PathLike = "report", *,
               names: Sequence[str] | None = None, sections: Sequence[str] | None = None, progress: bool = True,
               settings: ReportSettings | Mapping[str, Any] | None = None) -> ReportResult:
        """Write the HTML report with every figure. See :func:`cnn_explain.report.write_report`.

        ``settings`` is a :class:`~cnn_explain.report.ReportSettings` or a mapping of its fields.
        """
        from .report import write_report

        return write_report(self, images, data=data, out=out, names=names, sections=sections, progress=progress,
                            settings=settings)


def explain(model: nn.Module, *, class_names: Sequence[str] | None = None,
            transform: Callable[[Any], torch.Tensor] | None = None,
            device: str | torch.device | None = None, output: Any = None) -> Explainer:
    """Wrap a model to explain it. See :class:`Explainer`.

    Example:
        >>> ex = explain(model, class_names=["cat", "dog"])   # doctest: +SKIP
        >>> ex.predict(image, k=2)                             # doctest: +SKIP
    """
    return Explainer(model, class_names=class_names, transform=transform, device=device, output=output)
