r"""Window arithmetic of convolutions and poolings: one home for the formulas.

Along one axis, a convolution or pooling with kernel $k$, stride $s$, padding
$p$ and dilation $d$ over $n$ inputs gives output $o$ from the inputs

$$ o\,s - p + d\,t, \qquad t = 0, \dots, k-1 $$

(indices outside ``[0, n)`` are padding). Hence (seed 001)

$$ n_\text{out} = \Big\lfloor \frac{n + 2p - d(k-1) - 1}{s} \Big\rfloor + 1 $$

and with ``ceil_mode=True`` the ceiling instead, less one when the last window
would start beyond the input and its left padding. The functions are pure and
work per axis on Python ints; those marked so also accept integer NumPy arrays
or tensors for ``o`` (elementwise). They are tested against PyTorch's own
kernels (output sizes, and which inputs reach which outputs through autograd).

Example:
    >>> output_size(32, kernel=3, stride=1, padding=1)
    32
    >>> input_window(0, 0, kernel=3, stride=2, padding=1)       # reads rows -1..1
    (-1, 1)
    >>> receptive_box(0, 0, [Window(3, 1, 1), Window(2, 2)])      # conv 3x3 then 2x2 pool
    (-1, 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["pair", "output_size", "taps", "input_window", "adaptive_window", "same_padding",
           "Window", "receptive_box", "avg_pool_count", "avg_divisor"]


def pair(value: Any) -> tuple[int, int]:
    """``(rows, cols)`` from an int or a sequence: ``3 -> (3, 3)``, ``(2, 3) -> (2, 3)``, ``[4] -> (4, 4)``.

    Args:
        value: an int (or anything ``int()`` accepts) or a sequence of one or two of them.

    Raises:
        ValueError: an empty sequence or one of more than two values.
        TypeError: ``value`` is neither a number nor a sequence (e.g. ``None``, ``"same"``).
    """
    if isinstance(value, (tuple, list)) or (hasattr(value, "__len__") and not isinstance(value, (str, bytes))):
        items = list(value)
        if len(items) not in (1, 2):
            raise ValueError(f"expected one or two values for a (rows, cols) pair, got {value!r}")
        return int(items[0]), int(items[-1])
    if value is None or isinstance(value, (str, bytes)):
        raise TypeError(f"expected an int or a pair of ints, got {value!r}")
    return int(value), int(value)


def output_size(n: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1,
                *, ceil_mode: bool = False) -> int:
    r"""Output length of a convolution or pooling along one axis.

    $n_\text{out} = \lfloor (n + 2p - d(k-1) - 1) / s \rfloor + 1$; with ``ceil_mode``
    the ceiling, then one less if the last window starts at or beyond $n + p$
    (PyTorch drops a window that would read only right padding).

    Args:
        n: input length; kernel, stride, padding, dilation: the layer's ``k, s, p, d``.
        ceil_mode: pooling's ``ceil_mode``.

    Returns:
        The output length (``<= 0`` means the input is too small for the window).
    """
    span = n + 2 * padding - dilation * (kernel - 1) - 1
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    if (out - 1) * stride >= n + padding:
        out -= 1
    return out


def taps(o: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> list[int]:
    """The input indices output ``o`` reads: ``[o·s − p + d·t for t in 0..k−1]`` (may lie in the padding)."""
    return [o * stride - padding + dilation * t for t in range(kernel)]


def input_window(lo: Any, hi: Any, kernel: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1) -> tuple[Any, Any]:
    """The inclusive input range feeding outputs ``lo..hi``: ``(lo·s − p, hi·s − p + d·(k − 1))``.

    The range may extend into the padding (negative, or ``>= n``); the inputs
    that really reach an output are its :func:`taps` inside ``[0, n)``.
    ``lo`` and ``hi`` may be ints or integer arrays (elementwise).
    """
    return lo * stride - padding, hi * stride - padding + dilation * (kernel - 1)


def adaptive_window(o: Any, n_in: int, n_out: int) -> tuple[Any, Any]:
    """Adaptive pooling: output ``o`` of ``n_out`` reads ``⌊o·n_in/n_out⌋ .. ⌈(o+1)·n_in/n_out⌉ − 1``.

    Returns the inclusive ``(first, last)``; ``o`` may be an int or an integer array.
    """
    return (o * n_in) // n_out, -((-(o + 1) * n_in) // n_out) - 1


def same_padding(kernel: int, dilation: int = 1) -> int:
    """The left/top padding of ``padding="same"``: ``d·(k − 1) // 2`` (PyTorch puts any odd extra one right)."""
    return dilation * (kernel - 1) // 2


@dataclass(frozen=True)
class Window:
    """One axis of a conv / pool layer: kernel ``k``, stride ``s`` (default 1), padding ``p``, dilation ``d``."""

    kernel: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1


def receptive_box(lo: int, hi: int, layers: Sequence[Window]) -> tuple[int, int]:
    """The inclusive input range that outputs ``lo..hi`` of the last of a chain of layers depend on.

    Applies :func:`input_window` from the last layer back to the first, so the
    receptive field of one output is ``1 + Σ_l d_l(k_l − 1)·Π_{m<l} s_m`` and
    neighbouring outputs are ``Π s_l`` input pixels apart. The range may extend
    into the padding.

    Args:
        lo, hi: first and last output index of the last layer.
        layers: the chain, input side first.

    Returns:
        ``(first, last)`` input index.
    """
    for w in reversed(layers):
        lo, hi = input_window(lo, hi, w.kernel, w.stride, w.padding, w.dilation)
    return lo, hi


def avg_pool_count(o: int, n: int, kernel: int, stride: int, padding: int = 0,
                   *, count_include_pad: bool = True) -> int:
    """How many positions of axis window ``o`` average pooling counts (one factor of its divisor).

    The window ``[o·s − p, o·s − p + k − 1]`` is cut to ``[−p, n + p − 1]`` (a
    ``ceil_mode`` window may run past the right padding); with
    ``count_include_pad=False`` it is cut to the real inputs ``[0, n − 1]``.
    """
    start = o * stride - padding
    end = min(start + kernel, n + padding)  # exclusive
    if not count_include_pad:
        start, end = max(start, 0), min(end, n)
    return end - start


def avg_divisor(position: tuple[int, int], in_size: tuple[int, int], kernel: tuple[int, int],
                stride: tuple[int, int], padding: tuple[int, int] = (0, 0), *,
                count_include_pad: bool = True, divisor_override: int | None = None) -> int:
    """The number 2-D average pooling divides output ``position = (h, w)``'s window sum by.

    ``divisor_override`` if given, else the product over both axes of
    :func:`avg_pool_count` (PyTorch's ``avg_pool2d``).
    """
    if divisor_override:
        return int(divisor_override)
    counts = [avg_pool_count(position[a], in_size[a], kernel[a], stride[a], padding[a],
                             count_include_pad=count_include_pad) for a in (0, 1)]
    return counts[0] * counts[1]
