"""The forward passes of style transfer: graph-attached maps for the loss, detached maps for the targets.

Both record through :func:`cnn_explain.hooks.capture` with ``stop=True`` (the
forward ends after the last layer a loss reads) and ``copy=False`` (no copy of
the maps; if the model writes over one in place, the forward is run again with
copies, for the rest of the run).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..hooks import capture

__all__ = ["Forward", "target_maps"]


def _no_copy(t: torch.Tensor) -> torch.Tensor:
    """capture(reduce=...) that stores nothing: only the graph-attached outputs are used."""
    return t.new_empty(0)


class Forward:
    """``forward(image) -> {layer: graph-attached maps}``: one capture session per forward pass.

    (A fresh session each time: a session numbers repeated calls ``name#1``... across
    forwards, and registering a handful of hooks costs microseconds.) The maps are
    recorded without a copy; if the model changes one of them in place after its
    layer (``nn.ReLU(inplace=True)`` behind a recorded convolution), the forward is
    run again with copies, and every later forward of this run copies.
    """

    def __init__(self, model: nn.Module, layers: list[str], pre: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.model, self.layers, self.pre = model, layers, pre
        self.copy = False
        self._primed: tuple[torch.Tensor, int, dict[str, torch.Tensor]] | None = None

    def prime(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the forward of ``image`` now; the next call on the same, unchanged tensor returns these maps."""
        maps = self(image)
        self._primed = (image, image._version, maps)
        return maps

    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if self._primed is not None:
            primed, version, maps = self._primed
            self._primed = None
            if primed is image and image._version == version:  # the optimizer has not moved it yet
                return maps
        with capture(self.model, self.layers, grads=True, reduce=_no_copy, copy=self.copy, stop=True) as rec:
            self.model(self.pre(image))
        if rec.changed():
            self.copy = True
            return self(image)
        return {name: rec.live(name) for name in self.layers if name in rec}


def target_maps(forward: Forward, image: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """Feature maps of a fixed image (the targets), computed without recording autograd history."""
    with torch.no_grad(), capture(forward.model, names, copy=forward.copy, stop=True) as rec:
        forward.model(forward.pre(image))
    if rec.changed():
        forward.copy = True
        return target_maps(forward, image, names)
    feats = {n: rec[n] for n in names if n in rec}
    missing = [n for n in names if n not in feats or not isinstance(feats[n], torch.Tensor)]
    if missing:
        raise ValueError(f"layers {missing} did not produce a tensor during the forward pass")
    for n in names:
        if feats[n].dim() != 4:
            raise ValueError(f"layer {n!r} outputs shape {tuple(feats[n].shape)}; style transfer needs (N, C, H, W) maps")
    return {n: feats[n].detach() for n in names}
