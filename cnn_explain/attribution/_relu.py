"""Rectify the backward pass of *every* ReLU call: guided backprop and deconvnet.

captum and pytorch-grad-cam change the backward pass of registered ``nn.ReLU``
modules only; a network that calls ``F.relu``, ``torch.relu``, ``x.relu_()`` or
creates an ``nn.ReLU()`` inside ``forward`` silently gets the plain gradient.
Here the calls themselves are intercepted with a
`torch.overrides.TorchFunctionMode` (not a hook: nothing is registered
on the model) and replaced by `_RectifiedReLU`, whose forward is ReLU and
whose backward is

* guided backprop (Springenberg et al. 2015): ``grad.clamp(min=0) * (x > 0)``
* deconvnet (Zeiler & Fergus 2014):          ``grad.clamp(min=0)``

What the mode sees (torch 2.x): ``nn.ReLU`` and ``F.relu(x, inplace=...)`` arrive
as ``F.relu``; ``torch.relu`` / ``torch.relu_`` (``F.relu_`` is ``torch.relu_``)
and the tensor methods ``Tensor.relu`` / ``Tensor.relu_`` arrive as themselves.
While a handler runs, the mode is switched off, so ``F.relu``'s inner
``torch.relu`` is not counted twice. In-place variants modify and return the
same tensor object (``ctx.mark_dirty``), exactly as the originals do.

Which calls are ReLU calls is read from the operator table
(``cnn_explain.ops.Category.RELU``). Only ReLU is rectified; ``clamp(min=0)`` or ``x * (x > 0)`` written by hand are
ordinary arithmetic and keep their gradient. Other activations are recorded by
name so that the caller can warn.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .. import ops

__all__ = ["RectifyReLU", "OTHER_ACTIVATIONS"]


def _display_name(func) -> str:
    name = getattr(func, "__name__", repr(func)).rstrip("_")
    return "hardtanh (relu6)" if name == "hardtanh" else name  # nn.ReLU6 arrives as F.hardtanh


# what guided backprop leaves alone, by name: the table's other activations (and gated units)
OTHER_ACTIVATIONS = {f: _display_name(f) for f in ops.functions(ops.Category.ACTIVATION)}
OTHER_ACTIVATIONS[F.glu] = "glu"


class _RectifiedReLU(torch.autograd.Function):
    """``relu(x)`` whose backward keeps only positive gradients (and, for guided, where ``x > 0``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, inplace: bool, guided: bool) -> torch.Tensor:
        if inplace:
            out = x.relu_()
            ctx.mark_dirty(x)
        else:
            out = x.relu()
        ctx.guided = guided
        if guided:
            # the mask, not the output: a later in-place op on the output cannot spoil it
            ctx.save_for_backward(out > 0)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        g = grad.clamp(min=0)
        if ctx.guided:
            (mask,) = ctx.saved_tensors
            g = g * mask
        return g, None, None


def _relu_call(func, args, kwargs) -> tuple[torch.Tensor, bool] | None:
    """``(input, inplace)`` when ``func(*args, **kwargs)`` is a ReLU on a float tensor, else None."""
    if ops.category(func) is not ops.Category.RELU:
        return None
    if func is F.relu:
        x = args[0] if args else kwargs.get("input")
        inplace = args[1] if len(args) > 1 else kwargs.get("inplace", False)
    else:  # torch.relu(_), Tensor.relu(_): in place when the name ends in "_"
        x = args[0] if args else kwargs.get("input", kwargs.get("self"))
        inplace = func.__name__.endswith("_")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        return None
    return x, bool(inplace)


class RectifyReLU(TorchFunctionMode):
    """Context manager: inside it, every ReLU call backpropagates guided or deconvnet gradients.

    Args:
        rule: ``"guided"`` or ``"deconv"``.

    Attributes:
        calls: number of ReLU calls rectified so far.
        others: names of non-ReLU activations seen (guided backprop is not
            defined for them; their gradient is left unchanged).

    Example:
        >>> import torch
        >>> x = torch.tensor([-1.0, 2.0], requires_grad=True)
        >>> with RectifyReLU("guided") as mode:
        ...     y = torch.relu(x)
        >>> torch.autograd.grad((y * torch.tensor([5.0, -3.0])).sum(), x)[0]
        tensor([0., 0.])
        >>> mode.calls
        1
    """

    def __init__(self, rule: str = "guided") -> None:
        super().__init__()
        if rule not in ("guided", "deconv"):
            raise ValueError(f"rule must be 'guided' or 'deconv', got {rule!r}")
        self.guided = rule == "guided"
        self.calls = 0
        self.others: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        hit = _relu_call(func, args, kwargs)
        if hit is not None:
            self.calls += 1
            x, inplace = hit
            return _RectifiedReLU.apply(x, inplace, self.guided)
        if ops.category(func) is ops.Category.ACTIVATION or func is F.glu:
            self.others.add(OTHER_ACTIVATIONS.get(func) or _display_name(func))
        return func(*args, **kwargs)
