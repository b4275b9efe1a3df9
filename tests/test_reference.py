"""Seed 004's NumPy conv / pool (forward and backward) against torch; seed 003's correlation vs convolution."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnn_explain.reference import numpy_cnn as ref


def _nhwc(t: torch.Tensor) -> np.ndarray:
    return t.detach().permute(0, 2, 3, 1).numpy()


def _nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2)


def test_zero_pad_and_single_step_by_hand():
    x = np.arange(2 * 2 * 2 * 1, dtype=float).reshape(2, 2, 2, 1)
    p = ref.zero_pad(x, 2)
    assert p.shape == (2, 6, 6, 1)
    assert p[:, :2].sum() == 0 and p[:, :, -2:].sum() == 0
    np.testing.assert_array_equal(p[:, 2:4, 2:4], x)
    a = np.array([[[1.0], [2.0]], [[3.0], [4.0]]])
    w = np.array([[[1.0], [0.0]], [[-1.0], [2.0]]])
    assert ref.conv_single_step(a, w, np.array([[[0.5]]])) == 1 - 3 + 8 + 0.5


@pytest.mark.parametrize("stride,pad", list(itertools.product([1, 2, 3], [0, 1, 2])))
def test_conv_forward_backward_equal_torch(stride, pad):
    g = torch.Generator().manual_seed(stride * 10 + pad)
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, generator=g, requires_grad=True)
    z = F.conv2d(x, w, b, stride=stride, padding=pad)
    dz = torch.randn(z.shape, dtype=torch.float64, generator=g)
    dx, dw, db = torch.autograd.grad((z * dz).sum(), (x, w, b))

    W = w.detach().permute(2, 3, 1, 0).numpy()  # (f, f, n_C_prev, n_C)
    Z, cache = ref.conv_forward(_nhwc(x), W, b.detach().numpy().reshape(1, 1, 1, 4), {"stride": stride, "pad": pad})
    assert Z.shape == (2, (9 - 3 + 2 * pad) // stride + 1, (8 - 3 + 2 * pad) // stride + 1, 4)
    np.testing.assert_allclose(Z, _nhwc(z), atol=1e-10)
    dA, dW, dB = ref.conv_backward(_nhwc(dz), cache)
    np.testing.assert_allclose(dA, _nhwc(dx), atol=1e-10)
    np.testing.assert_allclose(dW, dw.permute(2, 3, 1, 0).numpy(), atol=1e-10)
    np.testing.assert_allclose(dB.reshape(-1), db.numpy(), atol=1e-10)
    # one output value by conv_single_step on the padded window
    A_pad = ref.zero_pad(_nhwc(x), pad)
    h, w_ = Z.shape[1] - 1, Z.shape[2] - 1
    window = A_pad[1, h * stride:h * stride + 3, w_ * stride:w_ * stride + 3, :]
    assert ref.conv_single_step(window, W[..., 2], cache[2][..., 2]) == pytest.approx(Z[1, h, w_, 2], abs=1e-10)


@pytest.mark.parametrize("mode", ["max", "average"])
@pytest.mark.parametrize("f,stride", [(2, 2), (3, 1), (3, 2), (2, 3)])
def test_pool_forward_backward_equal_torch(mode, f, stride):
    g = torch.Generator().manual_seed(f * 7 + stride)
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64, generator=g, requires_grad=True)
    pool = F.max_pool2d if mode == "max" else F.avg_pool2d
    y = pool(x, f, stride)
    dy = torch.randn(y.shape, dtype=torch.float64, generator=g)
    (dx,) = torch.autograd.grad((y * dy).sum(), x)
    A, cache = ref.pool_forward(_nhwc(x), {"f": f, "stride": stride}, mode=mode)
    assert A.shape[1:3] == ((9 - f) // stride + 1, (7 - f) // stride + 1)
    np.testing.assert_allclose(A, _nhwc(y), atol=1e-12)
    np.testing.assert_allclose(ref.pool_backward(_nhwc(dy), cache, mode=mode), _nhwc(dx), atol=1e-12)


def test_mask_and_distribute_by_hand():
    x = np.array([[1.0, 3.0], [4.0, 2.0]])
    np.testing.assert_array_equal(ref.create_mask_from_window(x), [[False, False], [True, False]])
    np.testing.assert_allclose(ref.distribute_value(2.0, (2, 2)), np.full((2, 2), 0.5))


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="stride"):
        ref.conv_forward(np.zeros((1, 4, 4, 1)), np.zeros((3, 3, 1, 1)), np.zeros((1, 1, 1, 1)), {"stride": 0, "pad": 0})
    with pytest.raises(ValueError, match="mode"):
        ref.pool_forward(np.zeros((1, 4, 4, 1)), {"f": 2, "stride": 2}, mode="min")
    with pytest.raises(ValueError, match="A_prev"):
        ref.pool_forward(np.zeros((4, 4, 1)), {"f": 2, "stride": 2})


def test_cross_correlation_is_flipped_convolution():
    rng = np.random.default_rng(0)
    x, k = rng.standard_normal((7, 6)), rng.standard_normal((3, 2))
    torch_out = F.conv2d(torch.from_numpy(x)[None, None], torch.from_numpy(k)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(ref.correlate2d(x, k), torch_out, atol=1e-12)  # frameworks correlate
    conv = ref.convolve2d(x, k)
    np.testing.assert_allclose(conv, ref.correlate2d(x, k[::-1, ::-1]), atol=1e-12)
    flipped = torch.from_numpy(k[::-1, ::-1].copy())[None, None]
    np.testing.assert_allclose(conv, F.conv2d(torch.from_numpy(x)[None, None], flipped)[0, 0].numpy(), atol=1e-12)
    assert not np.allclose(conv, ref.correlate2d(x, k))  # the flip matters for an asymmetric kernel
    # independent direct sum of the definition S(i,j) = Σ I(i−m, j−n) K(m,n), full output
    H, W = x.shape
    direct = np.zeros((H + 2, W + 1))
    for i, j in np.ndindex(direct.shape):
        direct[i, j] = sum(x[i - m, j - n] * k[m, n] for m in range(3) for n in range(2)
                           if 0 <= i - m < H and 0 <= j - n < W)
    np.testing.assert_allclose(ref.convolve2d(x, k, mode="full"), direct, atol=1e-12)
    np.testing.assert_allclose(ref.correlate2d(x, k, mode="full"), ref.convolve2d(x, k[::-1, ::-1], mode="full"), atol=1e-12)
