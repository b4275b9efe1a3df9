"""Seed 004's exercise done fully: convolution and pooling in plain NumPy, forward and backward.

Layout (as in the seed, channel-last):

* activations ``A`` ``(m, n_H, n_W, n_C)``;
* conv weights ``W`` ``(f, f, n_C_prev, n_C)`` and biases ``b`` ``(1, 1, 1, n_C)``;
* ``hparameters`` ``{"stride": s, "pad": p}`` for convolution and ``{"f": f, "stride": s}`` for pooling.

Output size of a convolution (seed 004, section 3.3)::

    n_H = ⌊(n_H_prev − f + 2·pad) / stride⌋ + 1        n_W likewise, n_C = number of filters

and of a pooling layer ``n_H = ⌊(n_H_prev − f) / stride⌋ + 1``.

Like every deep-learning framework, :func:`conv_forward` computes a *cross-correlation*
``Z[h, w] = Σ_{m,n} A[h·s + m, w·s + n] · W[m, n]`` (seed 003). :func:`correlate2d`
and :func:`convolve2d` show the difference: true convolution flips the kernel,
``convolve2d(x, k) == correlate2d(x, k[::-1, ::-1])``.

The loops of the seed are replaced by one loop over the ``f × f`` kernel offsets
(each offset is a strided slice of the padded input), which keeps the formula
visible and runs fast enough to test against PyTorch.

Example:
    >>> import numpy as np
    >>> A = np.random.default_rng(0).standard_normal((2, 5, 5, 3))
    >>> W = np.random.default_rng(1).standard_normal((3, 3, 3, 4)); b = np.zeros((1, 1, 1, 4))
    >>> Z, cache = conv_forward(A, W, b, {"stride": 2, "pad": 1})
    >>> Z.shape
    (2, 3, 3, 4)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "zero_pad",
    "conv_single_step",
    "conv_forward",
    "conv_backward",
    "pool_forward",
    "create_mask_from_window",
    "distribute_value",
    "pool_backward",
    "correlate2d",
    "convolve2d",
]


def _hparam(hparameters: dict[str, Any], key: str, minimum: int) -> int:
    if not isinstance(hparameters, dict) or key not in hparameters:
        raise ValueError(f"hparameters must be a dict with key {key!r}, got {hparameters!r}")
    value = hparameters[key]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"hparameters[{key!r}] must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_rank(array: np.ndarray, rank: int, argname: str, layout: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != rank:
        raise ValueError(f"{argname} must have shape {layout}, got {array.shape}")
    return array


def zero_pad(X: np.ndarray, pad: int) -> np.ndarray:
    """Pad the height and width of every image with ``pad`` zeros (seed 004, figure 1).

    Args:
        X: ``(m, n_H, n_W, n_C)``.
        pad: number of zeros added on each side.

    Returns:
        ``(m, n_H + 2·pad, n_W + 2·pad, n_C)``.
    """
    X = _check_rank(X, 4, "X", "(m, n_H, n_W, n_C)")
    return np.pad(X, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="constant", constant_values=0)


def conv_single_step(a_slice_prev: np.ndarray, W: np.ndarray, b: np.ndarray) -> float:
    """One output value: ``Σ a_slice_prev ⊙ W + b`` (seed 004, section 3.2).

    Args:
        a_slice_prev: ``(f, f, n_C_prev)`` window of the input.
        W: ``(f, f, n_C_prev)`` one filter.
        b: ``(1, 1, 1)`` its bias.

    Returns:
        The scalar ``Z``.
    """
    if np.shape(a_slice_prev) != np.shape(W):
        raise ValueError(f"a_slice_prev {np.shape(a_slice_prev)} and W {np.shape(W)} must have the same shape")
    return float(np.sum(np.multiply(a_slice_prev, W)) + float(np.asarray(b).reshape(-1)[0]))


def _out_size(n_prev: int, f: int, pad: int, stride: int, argname: str) -> int:
    n = (n_prev - f + 2 * pad) // stride + 1
    if n < 1:
        raise ValueError(f"{argname}: a {f}×{f} window does not fit an input of size {n_prev} with pad {pad}")
    return n


def conv_forward(A_prev: np.ndarray, W: np.ndarray, b: np.ndarray, hparameters: dict[str, int]):
    """Forward pass of a convolution layer (cross-correlation, as in every framework).

    ``Z[i, h, w, c] = Σ_{m, n, k} A_pad[i, h·s + m, w·s + n, k] · W[m, n, k, c] + b[c]``

    Args:
        A_prev: ``(m, n_H_prev, n_W_prev, n_C_prev)``.
        W: ``(f, f, n_C_prev, n_C)``.
        b: ``(1, 1, 1, n_C)``.
        hparameters: ``{"stride": s, "pad": p}``.

    Returns:
        ``(Z, cache)``: ``Z`` ``(m, n_H, n_W, n_C)`` with
        ``n_H = ⌊(n_H_prev − f + 2p)/s⌋ + 1``; ``cache = (A_prev, W, b, hparameters)``.
    """
    A_prev = _check_rank(A_prev, 4, "A_prev", "(m, n_H_prev, n_W_prev, n_C_prev)")
    W = _check_rank(W, 4, "W", "(f, f, n_C_prev, n_C)")
    stride, pad = _hparam(hparameters, "stride", 1), _hparam(hparameters, "pad", 0)
    f = W.shape[0]
    if W.shape[1] != f or W.shape[2] != A_prev.shape[3]:
        raise ValueError(f"W must be (f, f, n_C_prev={A_prev.shape[3]}, n_C), got {W.shape}")
    n_H = _out_size(A_prev.shape[1], f, pad, stride, "A_prev")
    n_W = _out_size(A_prev.shape[2], f, pad, stride, "A_prev")
    A_pad = zero_pad(A_prev, pad)
    Z = np.zeros((A_prev.shape[0], n_H, n_W, W.shape[3]), dtype=np.result_type(A_prev, W))
    for m in range(f):
        for n in range(f):
            window = A_pad[:, m:m + stride * (n_H - 1) + 1:stride, n:n + stride * (n_W - 1) + 1:stride, :]
            Z += window @ W[m, n]  # (m, n_H, n_W, n_C_prev) @ (n_C_prev, n_C)
    Z += np.asarray(b).reshape(1, 1, 1, -1)
    return Z, (A_prev, W, b, hparameters)


def conv_backward(dZ: np.ndarray, cache: tuple):
    """Backward pass of :func:`conv_forward` (seed 003's formulas ``g`` and ``h``).

    ``dW[m, n, k, c] = Σ_{i,h,w} A_pad[i, h·s + m, w·s + n, k] · dZ[i, h, w, c]``,
    ``dA_pad[i, h·s + m, w·s + n, k] += Σ_c W[m, n, k, c] · dZ[i, h, w, c]``,
    ``db[c] = Σ_{i,h,w} dZ[i, h, w, c]``.

    Args:
        dZ: ``(m, n_H, n_W, n_C)`` gradient of the cost with respect to ``Z``.
        cache: the ``cache`` returned by :func:`conv_forward`.

    Returns:
        ``(dA_prev, dW, db)`` shaped like ``A_prev``, ``W`` and ``b`` ``(1, 1, 1, n_C)``.
    """
    A_prev, W, b, hparameters = cache
    stride, pad = hparameters["stride"], hparameters["pad"]
    f = W.shape[0]
    m_, n_H, n_W, n_C = dZ.shape
    A_pad = zero_pad(A_prev, pad)
    dA_pad = np.zeros_like(A_pad, dtype=np.result_type(A_pad, dZ))
    dW = np.zeros_like(W, dtype=np.result_type(W, dZ))
    for m in range(f):
        for n in range(f):
            rows = slice(m, m + stride * (n_H - 1) + 1, stride)
            cols = slice(n, n + stride * (n_W - 1) + 1, stride)
            dA_pad[:, rows, cols, :] += dZ @ W[m, n].T
            dW[m, n] = np.einsum("ihwk,ihwc->kc", A_pad[:, rows, cols, :], dZ)
    db = dZ.sum(axis=(0, 1, 2)).reshape(1, 1, 1, n_C)
    dA_prev = dA_pad[:, pad:pad + A_prev.shape[1], pad:pad + A_prev.shape[2], :]
    return dA_prev, dW, db


def _check_mode(mode: str) -> str:
    if mode not in ("max", "average"):
        raise ValueError(f"mode must be 'max' or 'average', got {mode!r}")
    return mode


def pool_forward(A_prev: np.ndarray, hparameters: dict[str, int], mode: str = "max"):
    """Forward pass of max / average pooling (seed 004, section 4.1).

    ``A[i, h, w, c] = max`` (or mean) of ``A_prev[i, h·s : h·s + f, w·s : w·s + f, c]``.

    Args:
        A_prev: ``(m, n_H_prev, n_W_prev, n_C)``.
        hparameters: ``{"f": f, "stride": s}``.
        mode: ``"max"`` or ``"average"``.

    Returns:
        ``(A, cache)``: ``A`` ``(m, n_H, n_W, n_C)`` with ``n_H = ⌊(n_H_prev − f)/s⌋ + 1``;
        ``cache = (A_prev, hparameters)``.
    """
    A_prev = _check_rank(A_prev, 4, "A_prev", "(m, n_H_prev, n_W_prev, n_C)")
    f, stride = _hparam(hparameters, "f", 1), _hparam(hparameters, "stride", 1)
    _check_mode(mode)
    n_H = _out_size(A_prev.shape[1], f, 0, stride, "A_prev")
    n_W = _out_size(A_prev.shape[2], f, 0, stride, "A_prev")
    # windows: (m, n_H_prev - f + 1, n_W_prev - f + 1, n_C, f, f), then keep every stride-th
    windows = sliding_window_view(A_prev, (f, f), axis=(1, 2))[:, ::stride, ::stride][:, :n_H, :n_W]
    A = windows.max(axis=(4, 5)) if mode == "max" else windows.mean(axis=(4, 5))
    return A, (A_prev, hparameters)


def create_mask_from_window(x: np.ndarray) -> np.ndarray:
    """Boolean mask, True where ``x`` holds its maximum (seed 004).

    With ties every maximum is True (the seed's definition); PyTorch routes the
    gradient to one of them only. Random real inputs have no ties.
    """
    x = np.asarray(x)
    return x == np.max(x)


def distribute_value(dz: float, shape: tuple[int, int]) -> np.ndarray:
    """Spread ``dz`` evenly over a window of ``shape`` ``(n_H, n_W)``: each entry ``dz / (n_H·n_W)``."""
    n_H, n_W = shape
    return np.full((n_H, n_W), dz / (n_H * n_W))


def pool_backward(dA: np.ndarray, cache: tuple, mode: str = "max") -> np.ndarray:
    """Backward pass of :func:`pool_forward`.

    Max: each output's gradient goes to the input that won its window
    (:func:`create_mask_from_window`). Average: it is shared equally by the ``f·f``
    inputs (:func:`distribute_value`). Overlapping windows (``stride < f``) add up.

    Args:
        dA: ``(m, n_H, n_W, n_C)`` gradient with respect to the pooled output.
        cache: the ``cache`` returned by :func:`pool_forward`.
        mode: ``"max"`` or ``"average"``.

    Returns:
        ``dA_prev`` shaped like ``A_prev``.
    """
    A_prev, hparameters = cache
    _check_mode(mode)
    f, stride = hparameters["f"], hparameters["stride"]
    dA_prev = np.zeros_like(A_prev, dtype=np.result_type(A_prev, dA))
    _, n_H, n_W, _ = dA.shape
    for h in range(n_H):
        for w in range(n_W):
            rows, cols = slice(h * stride, h * stride + f), slice(w * stride, w * stride + f)
            grad = dA[:, h, w, :][:, None, None, :]  # (m, 1, 1, n_C)
            if mode == "max":
                window = A_prev[:, rows, cols, :]
                mask = window == window.max(axis=(1, 2), keepdims=True)  # create_mask_from_window per (i, c)
                dA_prev[:, rows, cols, :] += mask * grad
            else:
                dA_prev[:, rows, cols, :] += grad / (f * f)  # distribute_value per (i, c)
    return dA_prev


# --------------------------------------------------------------------------- seed 003
def _check_2d(x: np.ndarray, k: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    x, k = np.asarray(x, dtype=float), np.asarray(k, dtype=float)
    if x.ndim != 2 or k.ndim != 2:
        raise ValueError(f"x and k must be 2-D arrays, got shapes {x.shape} and {k.shape}")
    if mode not in ("valid", "full"):
        raise ValueError(f"mode must be 'valid' or 'full', got {mode!r}")
    if mode == "valid" and (k.shape[0] > x.shape[0] or k.shape[1] > x.shape[1]):
        raise ValueError(f"mode='valid' needs the kernel {k.shape} to fit inside x {x.shape}")
    return x, k


def correlate2d(x: np.ndarray, k: np.ndarray, mode: str = "valid") -> np.ndarray:
    """Cross-correlation, what CNN layers compute: ``S(i, j) = Σ_m Σ_n I(i + m, j + n) K(m, n)``.

    Args:
        x: ``(H, W)`` input.
        k: ``(kh, kw)`` kernel.
        mode: ``"valid"`` (``(H − kh + 1, W − kw + 1)``) or ``"full"`` (zero-padded,
            ``(H + kh − 1, W + kw − 1)``).
    """
    x, k = _check_2d(x, k, mode)
    if mode == "full":
        x = np.pad(x, ((k.shape[0] - 1,) * 2, (k.shape[1] - 1,) * 2))
    return np.einsum("ijmn,mn->ij", sliding_window_view(x, k.shape), k)


def convolve2d(x: np.ndarray, k: np.ndarray, mode: str = "valid") -> np.ndarray:
    """True (flipped-kernel) convolution: ``S(i, j) = Σ_m Σ_n I(i − m, j − n) K(m, n)`` (seed 003).

    Written straight from the definition, with ``I`` zero outside the image: every
    kernel entry ``K(m, n)`` adds a copy of the image shifted by ``(m, n)``. The
    ``"valid"`` part keeps the outputs whose sum never reads outside the image.
    It equals ``correlate2d(x, k[::-1, ::-1])``: frameworks' "convolution" is
    cross-correlation with the kernel flipped, which makes no difference to
    learning (the network simply learns the flipped kernel).

    Args:
        x: ``(H, W)`` input.
        k: ``(kh, kw)`` kernel.
        mode: ``"valid"`` or ``"full"`` (as :func:`correlate2d`).
    """
    x, k = _check_2d(x, k, mode)
    (H, W), (kh, kw) = x.shape, k.shape
    full = np.zeros((H + kh - 1, W + kw - 1))
    for m in range(kh):
        for n in range(kw):
            full[m:m + H, n:n + W] += k[m, n] * x  # S(i, j) gets I(i − m, j − n)·K(m, n)
    return full if mode == "full" else full[kh - 1:H, kw - 1:W]
