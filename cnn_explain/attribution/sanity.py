"""Sanity checks for saliency maps: the model-parameter randomization test
(Adebayo et al. 2018, "Sanity Checks for Saliency Maps"), and deletion /
insertion curves (re-exported from `cnn_explain.attribution.deletion`).

A map that explains the *model* must change when the model's learned weights
are destroyed. Layers are re-initialized **cascading from the top** (logits
first, then the layer below, … keeping the earlier ones re-initialized), the map
is recomputed after each step and compared with the original by

* Spearman rank correlation of the absolute maps, and
* SSIM of the absolute maps normalized to [0, 1] (see `._similarity`).

Adebayo et al. found that the plain gradient decorrelates quickly while guided
backprop stays almost unchanged: it mostly reconstructs the image (edges), not
what the model learned.

All re-initialization happens on a deep copy; the user's model is never touched
and torch's global RNG is restored (``seed`` makes the re-initialization reproducible).

Example:
    >>> from cnn_explain.attribution import sanity_check
    >>> s = sanity_check(model, digits[:4], method="gradient")   # doctest: +SKIP
    >>> print(s)                                                  # doctest: +SKIP
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from ..plotting._display import Displayable
from .._utils import forward_logits, model_input, positive_int, progress_bar, resolve_target
from ..hooks import LayerSpec, capture, model_lock, preserved, resolve_layers
from ._by_name import IG, METHOD_NAMES, canonical, compute
from ._similarity import normalize, spearman, ssim
from .deletion import DeletionInsertion, deletion_insertion
from .gradients import METHODS
from .result import Attribution

__all__ = ["sanity_check", "SanityResult", "deletion_insertion", "DeletionInsertion"]

#: every method the test accepts: saliency, Grad-CAM, Integrated Gradients (``"ig"``) and the CAM family
SANITY_METHODS = METHOD_NAMES
ORDERS = ("top-down", "bottom-up", "independent")


@dataclass(frozen=True, eq=False)
class SanityResult(Displayable):
    """The randomization cascade.

    Attributes:
        maps: ``(S + 1, N, C, H, W)`` the map at each step; step 0 is the trained model.
        layers: ``S`` names; step ``k`` re-initialized ``layers[k - 1]`` (and, when
            cascading, every layer before it in this list).
        spearman: ``(S + 1, N)`` rank correlation of ``|map|`` with the original (1 at step 0).
        ssim: ``(S + 1, N)`` SSIM of the normalized ``|map|`` with the original (1 at step 0).
        target: ``(N,)`` the class explained at every step (the trained model's).
        method, order: as passed. inputs: the images. params: the other arguments.
    """

    maps: torch.Tensor
    layers: tuple[str, ...]
    spearman: torch.Tensor
    ssim: torch.Tensor
    target: torch.Tensor
    method: str
    order: str
    inputs: torch.Tensor
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    @property
    def steps(self) -> list[str]:
        """Labels of the steps: ``"original"`` then ``"+fc"`` (cascading) or ``"fc"`` (independent)."""
        mark = "" if self.order == "independent" else "+"
        return ["original"] + [mark + n for n in self.layers]

    def step(self, k: int) -> Attribution:
        """The map after step ``k`` as an `Attribution` (for the heatmap figures)."""
        if not isinstance(k, int) or not 0 <= k < len(self.maps):
            raise ValueError(f"k must be an int in [0, {len(self.maps) - 1}], got {k!r}")
        return Attribution(self.maps[k], self.target, self.method, inputs=self.inputs,
                           params={"step": self.steps[k]})

    def __str__(self) -> str:
        rows = [f"{'step':<24}{'spearman':>10}{'ssim':>10}"]
        for name, r, s in zip(self.steps, self.spearman.mean(1).tolist(), self.ssim.mean(1).tolist()):
            rows.append(f"{name:<24}{r:>10.3f}{s:>10.3f}")
        return f"sanity check of {self.method!r} ({self.order}, mean over {self.maps.shape[1]} images)\n" + "\n".join(rows)


_OPTION_DEFAULTS: dict[str, Any] = {"abs": True, "smooth": 0, "noise": 0.15, "cam_layer": None, "ig_steps": 64}


def _explain(model: nn.Module, x: torch.Tensor, target: torch.Tensor, method: str, output: Any,
             options: dict[str, Any]) -> torch.Tensor:
    """The map of ``method``; ``options`` holds ``abs``, ``smooth``, ``noise`` (saliency), ``cam_layer``
    (Grad-CAM and the CAM family) and ``ig_steps`` (Integrated Gradients)."""
    if method in METHODS:
        kwargs = {"abs": options["abs"], "smooth": options["smooth"], "noise": options["noise"]}
    elif method == IG:
        kwargs = {"steps": options["ig_steps"]}
    else:
        kwargs = {"layer": options["cam_layer"]}
    return compute(model, x, target, method, output, kwargs).attribution


def _execution_order(model: nn.Module, x: torch.Tensor, layers: LayerSpec, output: Any) -> dict[str, nn.Module]:
    """Re-initializable layers (own parameters and ``reset_parameters``) in the order the forward calls them."""
    if layers is None:
        chosen = {n: m for n, m in model.named_modules()
                  if any(True for _ in m.parameters(recurse=False)) and hasattr(m, "reset_parameters")}
        if not chosen:
            raise ValueError("the model has no layer with parameters to re-initialize")
    else:
        chosen = resolve_layers(model, layers, argname="layers")
        bad = [n for n, m in chosen.items() if not hasattr(m, "reset_parameters")]
        if bad:
            raise ValueError(f"layers: {', '.join(bad)} cannot be re-initialized (no reset_parameters())")
    with preserved(model, eval=True), torch.no_grad(), capture(model, list(chosen.values()), keep_outputs=False) as rec:
        forward_logits(model, x, output)
    return {k: rec.modules[k] for k in rec.modules if "#" not in k}


def _similarity(original: torch.Tensor, maps: torch.Tensor) -> tuple[list[float], list[float]]:
    rho, ss = [], []
    for a, b in zip(original, maps):
        a2, b2 = a.abs().amax(0), b.abs().amax(0)
        rho.append(spearman(a2, b2))
        ss.append(ssim(normalize(a2), normalize(b2)))
    return rho, ss


def _check(method: Any, order: Any, seed: Any) -> str:
    method = canonical(method)
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(map(repr, ORDERS))}, got {order!r}")
    positive_int(seed, "seed", minimum=0)
    return method


def sanity_check(model: nn.Module, x: Any, *, method: str = "guided", target: Any = None,
                 order: str = "top-down", layers: LayerSpec = None, seed: int = 0, output: Any = None,
                 progress: bool = True, abs: bool = True, smooth: int = 0, noise: float = 0.15,
                 cam_layer: LayerSpec = None, ig_steps: int = 64) -> SanityResult:
    """Model-parameter randomization test (Adebayo et al. 2018).

    Args:
        model: a trained classifier (never modified: the test runs on a deep copy).
        x: images ``(N, C, H, W)``.
        method: ``"gradient"``, ``"guided"``, ``"deconv"``, ``"grad_cam"``, ``"guided_grad_cam"``,
            ``"integrated_gradients"`` (or ``"ig"``), or a CAM-family method
            (``"grad-cam"``, ``"grad-cam++"``, ``"score-cam"``, ...: see
            `cnn_explain.attribution.cam_family.CamMethod`). ``result.method`` is the
            canonical name (``"ig"`` -> ``"integrated_gradients"``).
        target: class per image; default the trained model's prediction, kept at every step.
        order: ``"top-down"`` (cascading from the output, the paper's main test),
            ``"bottom-up"`` (cascading from the input) or ``"independent"``
            (one layer at a time, the others trained).
        layers: layers to re-initialize (default: every module with its own
            parameters and a ``reset_parameters()``, in forward-call order).
        seed: seeds the re-initialization (torch's global RNG is restored).
        output: selects the score tensor from a model returning a tuple/dict.
        progress: show a progress bar over the steps.
        abs: saliency methods: absolute value of the gradient (see `saliency`).
        smooth: saliency methods: SmoothGrad samples (0: off).
        noise: saliency methods: SmoothGrad noise level.
        cam_layer: Grad-CAM and CAM-family methods: the layer whose feature maps are
            weighted (default: Grad-CAM's, the map the classifier's pooling reads).
        ig_steps: Integrated Gradients: quadrature points (its default rule, baseline 0).

    Returns:
        `SanityResult` (``print`` it for the table).
    """
    method = _check(method, order, seed)
    options = {"abs": abs, "smooth": smooth, "noise": noise, "cam_layer": cam_layer, "ig_steps": ig_steps}
    x = model_input(model, x)
    with model_lock(model):  # not while another thread has the model in eval mode or hooked
        work = copy.deepcopy(model)
    with preserved(work, eval=True), torch.no_grad():
        tgt = resolve_target(target, forward_logits(work, x, output))
    chain = _execution_order(work, x, layers, output)
    names = list(chain)[::-1] if order in ("top-down", "independent") else list(chain)
    trained = copy.deepcopy(work.state_dict())
    maps = [_explain(work, x, tgt, method, output, options)]
    devices = sorted({p.device.index or 0 for p in work.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for name in progress_bar(names, enabled=progress, desc=f"sanity check ({method})"):
            if order == "independent":
                work.load_state_dict(trained)
            with torch.no_grad():
                chain[name].reset_parameters()
            maps.append(_explain(work, x, tgt, method, output, options))
    stacked = torch.stack(maps)
    sims = [_similarity(stacked[0], m) for m in stacked]
    rho = torch.tensor([s[0] for s in sims], dtype=torch.float64)
    ss = torch.tensor([s[1] for s in sims], dtype=torch.float64)
    params = {"seed": seed, **{k: v for k, v in options.items() if v != _OPTION_DEFAULTS[k]}}
    return SanityResult(stacked, tuple(names), rho, ss, tgt, method, order, x.detach().cpu(), params)
