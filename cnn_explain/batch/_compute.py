"""The per-batch function both engines run: predictions, one map per method, per-image scores.

Every number of a row depends on its image only (the model runs in eval mode,
targets are per image, maps are reduced per image), so rows do not depend on
the batch size, the engine or the number of workers beyond float32 rounding.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn

from .._utils import forward_logits
from ..hooks import preserved
from ._settings import MethodSpec, Reduce, RunSettings
from ._source import Batch

__all__ = ["explain_batch", "schema"]


def schema(settings: RunSettings, hw: tuple[int, int], channels: int) -> pa.Schema:
    """The Parquet schema of a shard: fixed columns, then per method its map and scores.

    Maps are ``fixed_size_list<float16|float32>[H*W]`` (row-major ``(H, W)``);
    the thumbnail is ``uint8`` ``(t_h, t_w, C)`` flattened.
    """
    h, w = settings.map_size or hw
    mt = pa.float16() if settings.map_dtype == "float16" else pa.float32()
    fields = [pa.field("id", pa.string()), pa.field("index", pa.int64()), pa.field("label", pa.int64()),
              pa.field("pred", pa.int64()), pa.field("prob", pa.float32()), pa.field("target", pa.int64()),
              pa.field("target_prob", pa.float32())]
    if settings.thumbnail:
        th, tw = thumb_hw(hw, settings.thumbnail)
        fields.append(pa.field("thumbnail", pa.list_(pa.uint8(), th * tw * channels)))
    for m in settings.methods:
        fields.append(pa.field(f"{m.name}_map", pa.list_(mt, h * w)))
        if settings.deletion_steps:
            fields += [pa.field(f"{m.name}_deletion_auc", pa.float64()), pa.field(f"{m.name}_insertion_auc", pa.float64())]
        fields.append(pa.field(f"{m.name}_inside", pa.float64()))
    return pa.schema(fields)


def thumb_hw(hw: tuple[int, int], side: int) -> tuple[int, int]:
    """Thumbnail size: the input's ``(H, W)`` scaled so that the longer side is at most ``side``."""
    scale = min(1.0, side / max(hw))
    return max(1, round(hw[0] * scale)), max(1, round(hw[1] * scale))


def _predict(model: nn.Module, x: torch.Tensor, settings: RunSettings,
             labels: np.ndarray) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(N, classes)`` float scores, and ``{method: attribution}`` of what was computed on the way.

    With a Grad-CAM method and targets that need no scores first (the predicted
    class or the label), the scores are those of Grad-CAM's own forward pass:
    one forward pass per batch fewer.
    """
    cams = [m for m in settings.methods if m.name in ("grad_cam", "guided_grad_cam")]
    if cams and settings.target in ("pred", "label"):
        from ..attribution.cam import grad_cam_and_logits

        spec = cams[0]
        given = None if settings.target == "pred" else _targets(settings, None, labels)
        opts = {**spec.kwargs, "layer": _cam_site(model, x, spec.kwargs.get("layer"))}
        res, logits = grad_cam_and_logits(model, x, target=given, guided=spec.name == "guided_grad_cam", **opts)
        return logits.float(), {spec.name: res.attribution}
    with preserved(model, eval=True), torch.inference_mode():
        return forward_logits(model, x).float(), {}


_SITES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {(structure, input): CamLayer}


def _cam_site(model: nn.Module, x: torch.Tensor, layer: Any) -> Any:
    """Grad-CAM's layer: a chosen one as given; the default found by a probe forward once per model and input
    shape (not once per batch). The key includes every module's name and type, so a changed model probes again."""
    from ..attribution.cam import cam_layer

    if layer is not None:
        return layer
    key = (tuple((n, type(m)) for n, m in model.named_modules()), tuple(x.shape[1:]), x.dtype, x.device)
    sites = _SITES.setdefault(model, {})
    if key not in sites:
        sites[key] = cam_layer(model, x, None)  # the probe puts the model in eval mode and back
    return sites[key]


def _targets(settings: RunSettings, logits: torch.Tensor | None, labels: np.ndarray) -> torch.Tensor:
    if settings.target == "pred":
        return logits.argmax(1)
    if settings.target == "label":
        if (labels < 0).any():
            raise ValueError("target='label' but some samples have no label")
        return torch.as_tensor(labels, dtype=torch.long)
    if settings.target >= logits.shape[1]:
        raise ValueError(f"target={settings.target} but the model has {logits.shape[1]} classes")
    return torch.full((logits.shape[0],), int(settings.target), dtype=torch.long)


def _attribution(model: nn.Module, x: torch.Tensor, tgt: torch.Tensor, spec: MethodSpec) -> torch.Tensor:
    """``(N, C', H, W)`` attribution of one method."""
    from ..attribution import grad_cam, occlusion, saliency

    opts = spec.kwargs
    if spec.name in ("grad_cam", "guided_grad_cam"):
        return grad_cam(model, x, target=tgt, guided=spec.name == "guided_grad_cam", **opts).attribution
    if spec.name == "occlusion":
        return occlusion(model, x, target=tgt, progress=False, **opts).attribution
    return saliency(model, x, target=tgt, progress=False, **opts).attribution


def _reduce(a: torch.Tensor, how: Reduce) -> torch.Tensor:
    if how is Reduce.FIRST:
        return a[:, 0]
    if how is Reduce.SUM:
        return a.sum(1)
    return a.abs().amax(1)


def _inside(maps: torch.Tensor, masks: torch.Tensor | None) -> np.ndarray:
    """Fraction of ``|map|`` mass inside each image's mask (NaN without a mask or with zero mass)."""
    if masks is None:
        return np.full(maps.shape[0], np.nan)
    mass = maps.double().abs()
    total = mass.sum((1, 2))
    inside = (mass * masks.to(mass.device)).sum((1, 2))
    return torch.where(total > 0, inside / total, torch.full_like(total, float("nan"))).cpu().numpy()


def _thumbnails(x: torch.Tensor, side: int) -> np.ndarray:
    th, tw = thumb_hw(tuple(x.shape[-2:]), side)
    t = x.float()
    if (th, tw) != tuple(x.shape[-2:]):
        t = F.interpolate(t, size=(th, tw), mode="bilinear", align_corners=False, antialias=True)
    lo = t.amin((1, 2, 3), keepdim=True)
    hi = t.amax((1, 2, 3), keepdim=True)
    t = (t - lo) / (hi - lo).clamp_min(1e-12)  # per image, so normalized inputs still show
    return (t * 255).round().to(torch.uint8).permute(0, 2, 3, 1).reshape(x.shape[0], -1).cpu().numpy()


def explain_batch(model: nn.Module, batch: Batch, settings: RunSettings, device: torch.device) -> pa.Table:
    """Rows for one batch: predictions, every method's map and scores.

    Args:
        model: the classifier (left as found: eval mode and flags are restored).
        batch: the samples (``x`` ``(N, C, H, W)``).
        settings: methods, target rule, map size and dtype, deletion steps.
        device: where the model lives.

    Returns:
        A ``pyarrow.Table`` with :func:`schema`'s columns, one row per sample, in ``batch`` order.
    """
    from ..attribution import deletion_insertion

    x = batch.x.to(device)
    logits, first = _predict(model, x, settings, batch.labels)
    probs = logits.softmax(1).cpu()
    tgt = _targets(settings, logits.cpu(), batch.labels)
    cols: dict[str, Any] = {"id": batch.ids, "index": batch.index, "label": batch.labels,
                            "pred": probs.argmax(1).numpy(), "prob": probs.amax(1).numpy(),
                            "target": tgt.numpy(), "target_prob": probs.gather(1, tgt[:, None])[:, 0].numpy()}
    if settings.thumbnail:
        cols["thumbnail"] = _thumbnails(batch.x, settings.thumbnail)
    np_dtype = np.float16 if settings.map_dtype == "float16" else np.float32
    for spec in settings.methods:
        a = first.pop(spec.name) if spec.name in first else _attribution(model, x, tgt, spec)
        maps = _reduce(a.float(), spec.reduce)  # (N, H, W) at the input's size
        if settings.deletion_steps:
            d = deletion_insertion(model, x, maps, target=tgt, steps=settings.deletion_steps, progress=False)
            cols[f"{spec.name}_deletion_auc"] = d.deletion_auc.numpy()
            cols[f"{spec.name}_insertion_auc"] = d.insertion_auc.numpy()
        cols[f"{spec.name}_inside"] = _inside(maps, batch.masks)
        if settings.map_size is not None and tuple(maps.shape[-2:]) != settings.map_size:
            maps = F.interpolate(maps[:, None], size=settings.map_size, mode="bilinear", align_corners=False)[:, 0]
        cols[f"{spec.name}_map"] = maps.reshape(maps.shape[0], -1).cpu().numpy().astype(np_dtype)
    sch = schema(settings, tuple(batch.x.shape[-2:]), batch.x.shape[1])
    arrays = []
    for f in sch:
        v = cols[f.name]
        if pa.types.is_fixed_size_list(f.type):
            arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(v).reshape(-1),
                                                                     f.type.value_type), f.type.list_size))
        else:
            arrays.append(pa.array(v, f.type))
    return pa.Table.from_arrays(arrays, schema=sch)
