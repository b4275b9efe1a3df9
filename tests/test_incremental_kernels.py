"""The pieces that make incremental occlusion fast: position grouping, max pooling by strided maxima,
patch pasting by scatter, and low-precision change propagation — each against a plain reference."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from test_incremental import Residual, Strided, _seeded

from cnn_explain.attribution import occlusion
from cnn_explain.attribution.occlude import grouping as _grouping
from cnn_explain.attribution.occlude import regions
from cnn_explain.attribution.occlude.grouping import group_positions, partition_axis
from cnn_explain.attribution.occlude.incremental import IncrementalOcclusion
from cnn_explain.attribution.occlude.lowp import native_bfloat16
from cnn_explain.attribution.occlude.regions import Box, max_pool, read_change, read_windows
from cnn_explain.attribution.occlude.windows import make_grid, window_mask


def _brute_force(sizes, weights, k, min_count):
    """Least cost over every assignment of the distinct size vectors to at most k groups."""
    uniq, inv, counts = torch.unique(sizes, dim=0, return_inverse=True, return_counts=True)
    best = float("inf")
    for labels in itertools.product(range(k), repeat=len(uniq)):
        lab = torch.tensor(labels)
        cost = 0.0
        for g in set(labels):
            members = lab == g
            n = int(counts[members].sum())
            if n < min_count and len(set(labels)) > 1:
                cost = float("inf")
                break
            cost += n * float(uniq[members].double().amax(0) @ weights)
        best = min(best, cost)
    return best


@pytest.mark.parametrize("seed", range(4))
def test_partition_axis_matches_brute_force_on_one_size(seed):
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(1, 9, (40, 1), generator=g)
    weights = torch.tensor([1.0], dtype=torch.float64)
    for k in (1, 2, 3):
        results = partition_axis(sizes, weights, k, min_count=3)
        ids, cost = min(results, key=lambda r: float(r[1] @ weights))
        # reported cost is what the ids imply
        implied = sum(int((ids == gi).sum()) * int(sizes[ids == gi].max()) for gi in ids.unique().tolist())
        assert float(cost[0]) == implied
        # one size per position: sorting is exact, so the DP is optimal
        assert implied == pytest.approx(_brute_force(sizes, weights, k, 3))
        assert all(int((ids == gi).sum()) >= 3 for gi in ids.unique().tolist()) or len(ids.unique()) == 1


def test_group_positions_is_a_product_of_row_and_column_groups():
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(1, 6, (12, 3), generator=g).repeat_interleave(12, 0)  # 12 window rows × 12 columns
    cols = torch.randint(1, 6, (12, 3), generator=g).repeat(12, 1)
    ids = group_positions(rows, cols, torch.tensor([100.0, 1e6, 1e6]), max_groups=3, min_count=12)
    assert 1 < len(ids.unique()) <= 9
    # positions in one window row and one window column group share a group id
    grid = ids.reshape(12, 12)
    assert all(len(set(grid[:, j].tolist())) == len(set(grid[:, 0].tolist())) for j in range(12))
    # product structure: two window rows either share every group or none
    for i in range(12):
        for k in range(12):
            same = torch.equal(grid[i], grid[k])
            assert same or not set(grid[i].tolist()) & set(grid[k].tolist())
    # positions with the same row and column sizes never end up in different groups
    sig = torch.cat([rows, cols], 1)
    for a in range(0, 144, 7):
        twins = (sig == sig[a]).all(1)
        assert len(ids[twins].unique()) == 1


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("cls, shape, window, stride", [(Residual, (15, 13), 3, 1), (Strided, (15, 13), 3, 1)])
def test_many_groups_still_exact(cls, shape, window, stride, channels_last, monkeypatch):
    monkeypatch.setattr(_grouping, "NODE_OVERHEAD", 0.0)  # tiny nets: grouping would not pay; force it
    model = _seeded(cls)
    x = torch.rand(1, 3, *shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    g = make_grid(shape, (window, window), (stride, stride))
    with torch.inference_mode():
        eng = IncrementalOcclusion(model, x, *g.positions(), min_group=1, max_groups=4, channels_last=channels_last)
        assert len(eng.group.unique()) > 1
        idx = eng.sort(torch.arange(len(g)))
        base = torch.zeros(3, *shape, dtype=torch.float64)

        def make_input(pos, box):
            start = (box.top, box.left)
            return torch.where(window_mask(g, pos, box.top, box.left, box.size),
                               read_windows(base, None, None, start, box.size),
                               read_windows(x[0], None, None, start, box.size))

        out = eng.run(idx, make_input)
        mask = window_mask(g, idx, torch.zeros_like(idx), torch.zeros_like(idx), shape)
        torch.testing.assert_close(out, model(torch.where(mask, base, x)), rtol=0, atol=1e-12)
        macs = eng.macs()
        assert macs["needed"] <= macs["computed"] <= macs["full"]


@pytest.mark.parametrize("h, w", [(5, 6), (8, 7), (9, 9)])
def test_max_pool_equals_torch(h, w):
    x = torch.randn(2, 3, h, w, generator=torch.Generator().manual_seed(h * w))
    x[0, 0, 0, 0], x[1, 1, 2, 2] = float("nan"), float("-inf")
    n = 0
    for k, s, p, d, ceil in itertools.product([(1, 1), (2, 2), (3, 2), (3, 3)], [(1, 1), (2, 2), (2, 3)],
                                              [(0, 0), (1, 1), (1, 0)], [(1, 1), (2, 1)], [False, True]):
        if 2 * p[0] > k[0] or 2 * p[1] > k[1] or (h + 2 * p[0] - d[0] * (k[0] - 1) - 1) < 0:
            continue
        ref = F.max_pool2d(x, k, s, p, d, ceil_mode=ceil)
        out = max_pool(x, k, s, p, d, tuple(ref.shape[-2:]))
        assert torch.equal(out.nan_to_num(7.0), ref.nan_to_num(7.0)), (k, s, p, d, ceil)
        n += 1
    assert n > 100


def _reference_read(cached, patch, box, start, size, pad):
    """Occluded windows built one position at a time."""
    c, hh, ww = cached.shape
    occ = cached.expand(len(start[0]), c, hh, ww).clone()
    for b in range(len(start[0])):
        t, l = int(box.top[b]), int(box.left[b])
        occ[b, :, t:t + box.size[0], l:l + box.size[1]] = patch[b]
    m = 10
    occ = F.pad(occ, (m, m, m, m), value=pad)
    return torch.stack([occ[b, :, int(start[0][b]) + m:int(start[0][b]) + m + size[0],
                            int(start[1][b]) + m:int(start[1][b]) + m + size[1]] for b in range(len(start[0]))])


@pytest.mark.parametrize("origin", [(-2, -1), (0, 0)])  # past the border (padded copy) / inside (a view)
@pytest.mark.parametrize("channels_last", [False, True])
def test_read_by_a_bank_of_lattice_windows(channels_last, origin, monkeypatch):
    """Window starts on a lattice (a grid seen through a stride, with repeats, past the borders)
    are copied out of a bank of the distinct windows; equal to the loop and to the per-element path."""
    g = torch.Generator().manual_seed(3)
    cached = torch.randn(3, 5, 13, 12, generator=g)[1]  # a view with a storage offset
    grid = torch.cartesian_prod(torch.arange(origin[0], origin[0] + 9, 2), torch.arange(origin[1], origin[1] + 7, 2))
    rows, cols = torch.cat([grid[:, 0], grid[:5, 0]]), torch.cat([grid[:, 1], grid[7:12, 1]])
    box = Box((2, 2), (rows + 1).clamp(0, 11), (cols + 1).clamp(0, 10))
    patch = torch.randn(len(rows), 5, 2, 2, generator=g)
    used = []
    bank = regions._bank

    def spy(*args, **kwargs):
        out = bank(*args, **kwargs)
        used.append(out is not None)
        return out

    monkeypatch.setattr(regions, "_bank", spy)
    for pad in (0.0, float("-inf")):
        ref = _reference_read(cached, patch, box, (rows, cols), (5, 4), pad)
        assert torch.equal(read_windows(cached, patch, box, (rows, cols), (5, 4), pad, {}, channels_last), ref)
    assert used and all(used)  # 20 lattice windows for 25 positions: the bank is taken
    monkeypatch.setattr(regions, "_bank", lambda *a, **k: None)
    for pad in (0.0, float("-inf")):
        ref = _reference_read(cached, patch, box, (rows, cols), (5, 4), pad)
        assert torch.equal(read_windows(cached, patch, box, (rows, cols), (5, 4), pad, {}, channels_last), ref)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("inside", [True, False])
def test_read_and_read_change_against_a_loop(inside, channels_last):
    g = torch.Generator().manual_seed(int(inside))
    cached, patch = torch.randn(4, 9, 8, generator=g), torch.randn(5, 4, 3, 2, generator=g)
    box = Box((3, 2), torch.tensor([0, 2, 6, 3, 1]), torch.tensor([0, 5, 6, 2, 4]))
    shift = 1 if inside else -1  # windows starting one row/col before the patch contain it; after, they cut it
    start = (box.top - shift, box.left - shift)
    size = (5, 4)
    for pad in (0.0, float("-inf")):
        ref = _reference_read(cached, patch, box, start, size, pad)
        out = read_windows(cached, patch, box, start, size, pad, {}, channels_last)
        assert torch.equal(out, ref)
        assert out.is_contiguous(memory_format=torch.channels_last) == (channels_last and inside)
    clean = _reference_read(cached, torch.stack([cached[:, t:t + 3, l:l + 2] for t, l in
                                                 zip(box.top.tolist(), box.left.tolist())]), box, start, size, 0.0)
    change = read_change(cached, patch, box, start, size, torch.float32, {}, channels_last)
    assert torch.equal(change, _reference_read(cached, patch, box, start, size, 0.0) - clean)


def test_low_precision_changes_are_close_and_exact_where_nothing_changed(tiny_resnet):
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    kw = dict(window=4, stride=2, mode="approx", approx_tau=None, approx_drill=1.0, compare_exact=True,
              progress=False, measure="logit")
    r = occlusion(tiny_resnet, x, approx_precision="bfloat16", **kw)
    assert r.extra["precision"] == "bfloat16"
    assert r.deviation["pearson"] > 0.999 and r.deviation["rel_max_abs"] < 0.02
    same = occlusion(tiny_resnet, x, approx_precision="float32", **kw)
    assert same.extra["precision"] == "float32" and same.deviation["rel_max_abs"] < 1e-5
    # a window of baseline values equal to the image changes nothing: every drop is exactly 0
    flat = occlusion(tiny_resnet, x, baseline=x, approx_precision="bfloat16", **{**kw, "compare_exact": False})
    assert torch.count_nonzero(flat.drops) == 0


def test_approx_precision_auto_and_errors():
    from cnn_explain.models import tiny_vgg as make

    tiny_vgg = make().eval()
    x = torch.rand(1, 3, 16, 16)
    r = occlusion(tiny_vgg, x, window=4, stride=4, mode="approx", progress=False)
    assert r.extra["precision"] == ("bfloat16" if native_bfloat16() else "float32")
    r64 = occlusion(tiny_vgg.double(), x.double(), window=4, stride=4, mode="approx", progress=False)
    assert r64.extra["precision"] == "float64"  # float64 models keep their precision under "auto"
    with pytest.raises(ValueError, match="approx_precision"):
        occlusion(tiny_vgg, x, mode="approx", approx_precision="half", progress=False)


def test_sequential_graph_equals_the_fx_trace():
    """Plain nn.Sequential models skip symbolic tracing; the graph is the one fx makes."""
    from torch import fx, nn

    from cnn_explain.attribution.occlude.graph import _sequential_graph, trace
    from cnn_explain.models import cifar10_cnn

    class Custom(nn.Module):
        def forward(self, x):
            return x * 2

    def signature(graph):
        return [(n.op, n.target, tuple(map(str, n.args))) for n in graph.nodes]

    nested = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.ReLU(), nn.Sequential(nn.MaxPool2d(2))), nn.Flatten())
    for model in (cifar10_cnn(), nested):
        assert _sequential_graph(model) is not None
        assert signature(trace(model)) == signature(fx.Tracer().trace(model))
    with_custom = nn.Sequential(nn.Conv2d(3, 4, 3), Custom())
    assert _sequential_graph(with_custom) is None  # a non-leaf child: traced by fx
    assert signature(trace(with_custom)) == signature(fx.Tracer().trace(with_custom))
