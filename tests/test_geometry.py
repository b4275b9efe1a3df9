"""geometry's formulas against PyTorch's own kernels: output sizes and, through autograd,
which inputs reach which outputs, over a grid of kernel / stride / padding / dilation / ceil_mode."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnn_explain import geometry as g

SIZES = (1, 4, 7, 10)
GRID = list(itertools.product((1, 2, 3, 4), (1, 2, 3), (0, 1, 2), (1, 2)))  # k, s, p, d


def _support(fn, n: int) -> list[set[int]]:
    """For each output index along rows, the input rows with a non-zero derivative (autograd)."""
    x = torch.rand(1, 1, n, 3, dtype=torch.float64) + 0.5
    jac = torch.autograd.functional.jacobian(lambda t: fn(t)[0, 0, :, 1], x)  # (n_out, 1, 1, n, 3)
    return [set(torch.nonzero(row.abs().sum(-1).reshape(n)).flatten().tolist()) for row in jac]


@pytest.mark.parametrize("k,s,p,d", GRID)
def test_conv_output_size_and_window_match_conv2d(k, s, p, d):
    w = torch.ones(1, 1, k, 1, dtype=torch.float64)
    for n in SIZES:
        n_out = g.output_size(n, k, s, p, d)
        if n_out <= 0:
            with pytest.raises(RuntimeError):
                F.conv2d(torch.zeros(1, 1, n, 3), w.float(), stride=(s, 1), padding=(p, 0), dilation=(d, 1))
            continue
        conv = lambda t: F.conv2d(t, w, stride=(s, 1), padding=(p, 0), dilation=(d, 1))  # noqa: E731
        assert conv(torch.zeros(1, 1, n, 3, dtype=torch.float64)).shape[2] == n_out
        support = _support(conv, n)
        for o in range(n_out):
            assert support[o] == {i for i in g.taps(o, k, s, p, d) if 0 <= i < n}
            first, last = g.input_window(o, o, k, s, p, d)
            assert (first, last) == (g.taps(o, k, s, p, d)[0], g.taps(o, k, s, p, d)[-1])
        # a range of outputs: the union of their supports lies in the window, touching both ends when inside
        lo, hi = 0, n_out - 1
        first, last = g.input_window(lo, hi, k, s, p, d)
        union = set().union(*support)
        assert union <= set(range(first, last + 1))
        if 0 <= first < n:
            assert min(union) == first
        if 0 <= last < n:
            assert max(union) == last


@pytest.mark.parametrize("k,s,p,d", [(k, s, p, d) for k, s, p, d in GRID if p <= k // 2])  # PyTorch's limit
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_max_pool_output_size_and_winners_match_max_pool2d(k, s, p, d, ceil_mode):
    for n in SIZES:
        n_out = g.output_size(n, k, s, p, d, ceil_mode=ceil_mode)
        x = torch.randn(1, 1, n, 3, dtype=torch.float64)
        if n_out <= 0:
            with pytest.raises(RuntimeError):
                F.max_pool2d(x, (k, 1), (s, 1), (p, 0), (d, 1), ceil_mode=ceil_mode)
            continue
        out, idx = F.max_pool2d(x, (k, 1), (s, 1), (p, 0), (d, 1), ceil_mode=ceil_mode, return_indices=True)
        assert out.shape[2] == n_out
        rows = (idx[0, 0, :, 1] // 3).tolist()  # flat index -> row
        for o, r in enumerate(rows):
            inside = [i for i in g.taps(o, k, s, p, d) if 0 <= i < n]
            if not inside:  # a window of padding only
                assert out[0, 0, o, 1] == float("-inf")
                continue
            assert r in inside
            assert out[0, 0, o, 1] == max(x[0, 0, i, 1] for i in inside)


@pytest.mark.parametrize("k,s,p", [(k, s, p) for k, s, p, d in GRID if d == 1 and p <= k // 2])
@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("include_pad", [False, True])
def test_avg_pool_size_support_and_divisor_match_avg_pool2d(k, s, p, ceil_mode, include_pad):
    for n in SIZES:
        n_out = g.output_size(n, k, s, p, ceil_mode=ceil_mode)
        if n_out <= 0:
            continue
        pool = lambda t: F.avg_pool2d(t, (k, 1), (s, 1), (p, 0), ceil_mode, include_pad)  # noqa: E731
        x = torch.rand(1, 1, n, 3, dtype=torch.float64)
        out = pool(x)
        assert out.shape[2] == n_out
        support = _support(pool, n)
        sums = F.avg_pool2d(x, (k, 1), (s, 1), (p, 0), ceil_mode, include_pad, divisor_override=1)
        for o in range(n_out):
            assert support[o] == {i for i in g.taps(o, k, s, p) if 0 <= i < n}
            div = g.avg_divisor((o, 1), (n, 3), (k, 1), (s, 1), (p, 0), count_include_pad=include_pad)
            torch.testing.assert_close(sums[0, 0, o, 1] / div, out[0, 0, o, 1], rtol=1e-12, atol=1e-12)
    assert g.avg_divisor((0, 0), (5, 5), (2, 2), (2, 2), divisor_override=7) == 7


@pytest.mark.parametrize("n_in,n_out", [(7, 3), (8, 4), (5, 5), (3, 5), (10, 1), (9, 2)])
def test_adaptive_window_matches_adaptive_avg_pool2d(n_in, n_out):
    pool = lambda t: F.adaptive_avg_pool2d(t, (n_out, 3))  # noqa: E731
    support = _support(pool, n_in)
    for o in range(n_out):
        first, last = g.adaptive_window(o, n_in, n_out)
        assert support[o] == set(range(first, last + 1))
    firsts, lasts = g.adaptive_window(np.arange(n_out), n_in, n_out)  # elementwise on arrays
    assert [g.adaptive_window(o, n_in, n_out) for o in range(n_out)] == list(zip(firsts.tolist(), lasts.tolist()))


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("k,d", [(3, 1), (5, 1), (3, 2), (4, 1), (4, 3)])
def test_same_padding_matches_padding_same(k, d):
    x = torch.rand(1, 1, 9, 3, dtype=torch.float64)
    w = torch.ones(1, 1, k, 1, dtype=torch.float64)
    conv = lambda t: F.conv2d(t, w, padding="same", dilation=(d, 1))  # noqa: E731
    support = _support(conv, 9)
    p = g.same_padding(k, d)
    assert conv(x).shape[2] == 9
    for o in range(9):
        assert support[o] == {i for i in g.taps(o, k, 1, p, d) if 0 <= i < 9}


def test_receptive_box_of_a_chain_matches_autograd():
    chain = [g.Window(3, 1, 1), g.Window(2, 2), g.Window(3, 2, 1, 2), g.Window(3, 1, 0)]

    def net(t):
        w3 = torch.ones(1, 1, 3, 1, dtype=torch.float64)
        t = F.conv2d(t, w3, padding=(1, 0))
        t = F.avg_pool2d(t, (2, 1), (2, 1))
        t = F.conv2d(t, w3, stride=(2, 1), padding=(1, 0), dilation=(2, 1))
        return F.conv2d(t, w3)

    n = 40
    support = _support(net, n)
    for o in range(len(support)):
        first, last = g.receptive_box(o, o, chain)
        assert support[o] <= set(range(first, last + 1))
        if 0 <= first and last < n:  # inside the image the extreme taps are real inputs
            assert (min(support[o]), max(support[o])) == (first, last)
    assert sum(0 <= g.receptive_box(o, o, chain)[0] and g.receptive_box(o, o, chain)[1] < n
               for o in range(len(support))) >= 2
    # rf = 1 + Σ d(k−1)·Π earlier strides; jump = Π strides
    f0, l0 = g.receptive_box(0, 0, chain)
    f1, _ = g.receptive_box(1, 1, chain)
    assert l0 - f0 + 1 == 1 + 2 + 1 * 1 + 4 * 2 + 2 * 4 and f1 - f0 == 4


def test_pair_accepts_ints_and_sequences_and_rejects_the_rest():
    assert g.pair(3) == (3, 3) and g.pair((2, 5)) == (2, 5) and g.pair([4]) == (4, 4)
    assert g.pair(torch.Size([2, 3])) == (2, 3) and g.pair(np.int64(2)) == (2, 2)
    with pytest.raises(ValueError, match="one or two"):
        g.pair((1, 2, 3))
    with pytest.raises(TypeError, match="same"):
        g.pair("same")
