"""What a report computes: :class:`ReportSettings` (every knob, with defaults sized for a laptop CPU)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ReportSettings", "jsonable"]

EMBED_METHODS = ("pca", "tsne", "umap")


@dataclass(frozen=True)
class ReportSettings:
    """Settings of :func:`cnn_explain.report.write_report` (pass them as keyword arguments).

    Attributes:
        title: the page title.
        input_shape: ``(C, H, W)`` for the model summary (default: the images' shape).
        top_k: classes listed per image in the predictions table.
        max_images: at most this many images get per-image figures (attribution, predictions).
        feature_layers: layers whose feature maps are shown (default: every conv layer).
        max_channels: channels shown per feature-map grid.
        filter_layer: conv layer whose weights are drawn (default: the first).
        maximize_layer: layer for activation maximization (default: the last conv layer).
        maximize_channels: an int ``k`` (the first ``k`` channels) or a list of channels.
        maximize_steps: optimization steps per maximization image.
        arithmetic_layer: layer whose output is worked out by hand (default: the first conv).
        arithmetic_channel: its channel.
        arithmetic_position: ``(h, w)`` of the output (default: the centre).
        occlusion_window: occluding square side, in pixels.
        occlusion_stride: step between occluding squares.
        cam_layer: Grad-CAM layer (default: Grad-CAM's own, the map the classifier's pooling reads).
        sanity_method: saliency method put through the randomization test.
        compare_methods: the section "Attribution methods side by side" (saliency, Integrated
            Gradients, Grad-CAM and ``compare_cam_methods`` in one figure); False leaves it out.
        compare_cam_methods: the CAM-family methods of that section (names of
            :class:`~cnn_explain.attribution.cam_family.CamMethod`).
        ig_steps: quadrature points of Integrated Gradients in that section.
        embed_methods: which of ``"pca"``, ``"tsne"``, ``"umap"`` to run when ``data`` is given.
        embed_layer: layer whose features are embedded (default: the embedding's default).
        embed_options: extra keyword arguments for :func:`cnn_explain.embedding.embed`; a key
            ``"pca"``, ``"tsne"`` or ``"umap"`` holds options for that method only, e.g.
            ``{"max_samples": 500, "tsne": {"perplexity": 10}}``.
        style: ``None`` (no style-transfer section) or a mapping with ``content`` and
            ``style`` images (paths, PIL images or tensors) and optional
            :func:`cnn_explain.style.transfer` options (``size``, ``steps``, ...).
        seed: seed for every random choice (maximization start, t-SNE, UMAP, style).
    """

    title: str = "cnn_explain report"
    input_shape: tuple[int, ...] | None = None
    top_k: int = 5
    max_images: int = 4
    feature_layers: Any = None
    max_channels: int = 16
    filter_layer: Any = None
    maximize_layer: Any = None
    maximize_channels: int | Sequence[int] = 8
    maximize_steps: int = 64
    arithmetic_layer: Any = None
    arithmetic_channel: int = 0
    arithmetic_position: tuple[int, int] | None = None
    occlusion_window: int = 8
    occlusion_stride: int = 4
    cam_layer: Any = None
    sanity_method: str = "guided"
    compare_methods: bool = True
    compare_cam_methods: tuple[str, ...] = ("grad-cam++", "score-cam")
    ig_steps: int = 32
    embed_methods: tuple[str, ...] = EMBED_METHODS
    embed_layer: Any = None
    embed_options: Mapping[str, Any] = field(default_factory=dict)
    style: Mapping[str, Any] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        from .._utils import positive_int

        for name in ("top_k", "max_images", "max_channels", "maximize_steps", "occlusion_window", "occlusion_stride",
                     "ig_steps"):
            positive_int(getattr(self, name), name)
        if not isinstance(self.compare_methods, bool):
            raise TypeError(f"compare_methods must be True or False, got {self.compare_methods!r}")
        object.__setattr__(self, "compare_cam_methods", _cam_methods(self.compare_cam_methods))
        methods = (self.embed_methods,) if isinstance(self.embed_methods, str) else tuple(self.embed_methods)
        bad = [m for m in methods if m not in EMBED_METHODS]
        if bad:
            raise ValueError(f"embed_methods must be a subset of {EMBED_METHODS}, got {bad}")
        object.__setattr__(self, "embed_methods", methods)
        if self.style is not None and not (isinstance(self.style, Mapping) and "content" in self.style
                                           and "style" in self.style):
            raise ValueError("style must be None or a mapping with 'content' and 'style' images (and options)")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> ReportSettings:
        """Build from keyword arguments; an unknown name is a ``TypeError`` that lists the known ones."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown report setting(s) {unknown}; known settings: {sorted(known)}")
        return cls(**options)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly settings for the manifest (modules, types and images are shown by name)."""
        return {f.name: jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _cam_methods(methods: Any) -> tuple[str, ...]:
    """``compare_cam_methods`` as a tuple of CAM-family names; an unknown name is a ``ValueError`` listing them."""
    from ..attribution.cam_family import CamMethod

    methods = (methods,) if isinstance(methods, str) else tuple(methods)
    known = [m.value for m in CamMethod]
    bad = [m for m in methods if m not in known]
    if bad:
        raise ValueError(f"compare_cam_methods must be names of {known}, got {bad}")
    return methods


def jsonable(value: Any) -> Any:
    """A JSON-serializable stand-in for ``value`` (numbers, strings, lists, dicts; others by type/name)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, type):
        return value.__name__
    if hasattr(value, "shape"):
        return f"<{type(value).__name__} {tuple(value.shape)}>"
    if hasattr(value, "__fspath__"):
        return str(value)
    if hasattr(value, "size") and hasattr(value, "mode"):  # PIL image
        return f"<image {value.size[0]}x{value.size[1]} {value.mode}>"
    return f"<{type(value).__name__}>"
