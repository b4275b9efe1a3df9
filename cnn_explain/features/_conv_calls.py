"""The convolutions that really ran: operands of every ``F.conv2d`` call of one forward.

A conv module's ``forward`` may do more than ``F.conv2d(x, self.weight, ...)``
with its attributes: pad the input itself (EfficientNet's static "same"
padding), standardize the weight first, or call the convolution with other
arguments. :class:`ConvCalls` (a ``TorchFunctionMode``) records, for every
``F.conv2d`` call, copies of the operands and the result, and for every
``F.pad`` call how far it shifted its input, so a worked sum can be written
with the input, weight, bias, stride, padding, dilation and groups that
actually produced a layer's output, in the coordinates of the layer's input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .. import geometry

__all__ = ["ConvCall", "ConvCalls"]

_CONV_ARGS = ["input", "weight", "bias", "stride", "padding", "dilation", "groups"]


@dataclass(frozen=True)
class ConvCall:
    """One ``F.conv2d`` call (copies taken when it ran; batch of one).

    Attributes:
        input: ``(C_in, H, W)`` what the convolution read (after any ``F.pad`` of the module).
        weight: ``(C_out, C_in/groups, kh, kw)``; bias ``(C_out,)`` or None.
        stride, dilation: ``(h, w)``; padding: the call's own zero padding ``(top, left)``.
        groups: the call's groups.
        output: ``(C_out, H_out, W_out)`` what it returned.
        shift: ``(top, left)`` of the ``F.pad`` calls that made ``input`` from an earlier
            tensor: input row ``r`` is that tensor's row ``r - shift[0]``.
    """

    input: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    output: torch.Tensor
    shift: tuple[int, int] = (0, 0)


def _padding(padding: Any, kernel: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int]:
    """The top/left zero padding of a ``F.conv2d`` ``padding`` argument (ints, ``"same"``, ``"valid"``)."""
    if padding == "valid":
        return (0, 0)
    if padding == "same":
        return tuple(geometry.same_padding(k, d) for k, d in zip(kernel, dilation))  # type: ignore[return-value]
    return geometry.pair(padding)


class ConvCalls(TorchFunctionMode):
    """While active, records every ``F.conv2d`` call of a batch-of-one forward (:attr:`calls`)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[ConvCall] = []
        self._shifts: dict[int, tuple[torch.Tensor, tuple[int, int]]] = {}  # holds refs: ids are not reused

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is F.conv2d and isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[0] == 1:
            self._record_conv(args, kwargs, out)
        elif func is F.pad and isinstance(out, torch.Tensor):
            self._record_pad(args, kwargs, out)
        return out

    def _shift_of(self, t: Any) -> tuple[int, int]:
        entry = self._shifts.get(id(t))
        return entry[1] if entry is not None and entry[0] is t else (0, 0)

    def _record_pad(self, args: tuple, kwargs: dict, out: torch.Tensor) -> None:
        bound = dict(zip(["input", "pad"], args), **kwargs)
        pad = tuple(bound.get("pad", ()))
        if len(pad) not in (2, 4) or out.dim() < 2:
            return
        top = pad[2] if len(pad) == 4 else 0
        before = self._shift_of(bound.get("input"))
        self._shifts[id(out)] = (out, (before[0] + top, before[1] + pad[0]))

    def _record_conv(self, args: tuple, kwargs: dict, out: torch.Tensor) -> None:
        a = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}
        a.update(zip(_CONV_ARGS, args))
        a.update(kwargs)
        weight = a["weight"].detach()
        dilation = geometry.pair(a["dilation"])
        bias = a["bias"]
        self.calls.append(ConvCall(
            input=a["input"].detach()[0].double().cpu().clone(), weight=weight.double().cpu().clone(),
            bias=None if bias is None else bias.detach().double().cpu().clone(),
            stride=geometry.pair(a["stride"]), padding=_padding(a["padding"], tuple(weight.shape[-2:]), dilation),
            dilation=dilation, groups=int(a["groups"]), output=out.detach()[0].double().cpu().clone(),
            shift=self._shift_of(a["input"]),
        ))

    def producing(self, output: torch.Tensor, weight: torch.Tensor | None = None) -> ConvCall | None:
        """The recorded call whose result is exactly ``output`` (``(C, H, W)``, float64), preferring one
        whose weight equals ``weight``; None when no convolution produced it."""
        hits = [c for c in self.calls if c.output.shape == output.shape and torch.equal(c.output, output)]
        if weight is not None:
            w = weight.detach().double().cpu()
            hits = sorted(hits, key=lambda c: not (c.weight.shape == w.shape and torch.equal(c.weight, w)))
        return hits[0] if hits else None
