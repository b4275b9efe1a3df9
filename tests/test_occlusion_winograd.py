"""Winograd F(4×4, 3×3) convolutions of changes in approximate occlusion.

The convolution itself is held to ``F.conv2d`` in float64 (an independent
computation); approximate occlusion with every position computed is held to
exact occlusion, and the layers it claims to have run by Winograd are checked.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnn_explain.attribution.occlude import occlusion
from cnn_explain.attribution.occlude.winograd import (
    MAX_PIXELS, _tiling, eligible, transform_weight, winograd_conv,
)


@pytest.mark.parametrize("shape,padding", [
    ((2, 5, 9, 7), (1, 1)),    # output not a multiple of 4: cropped tiles
    ((3, 4, 8, 8), (1, 1)),    # exactly 2×2 tiles
    ((1, 6, 10, 6), (0, 0)),   # a pre-padded crop, as the patch phase passes it
    ((2, 3, 6, 11), (2, 1)),   # unequal padding per axis, wider than a kernel's reach
])
def test_winograd_conv_equals_conv2d_in_float64(shape, padding):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g, dtype=torch.float64)
    w = torch.randn(7, shape[1], 3, 3, generator=g, dtype=torch.float64)
    out = winograd_conv(x, transform_weight(w), padding)
    ref = F.conv2d(x, w, padding=padding)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_float32_error_is_near_the_direct_convolutions():
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(4, 128, 8, 8, generator=g), torch.randn(128, 128, 3, 3, generator=g) / 34
    ref = F.conv2d(x.double(), w.double(), padding=1)
    rel = lambda out: float((out.double() - ref).norm() / ref.norm())  # noqa: E731
    direct, wino = rel(F.conv2d(x, w, padding=1)), rel(winograd_conv(x, transform_weight(w), (1, 1)))
    assert wino < 1e-5 and wino < 50 * direct  # measured: 3e-6 against 2e-7 (module docstring)


def test_channels_last_input_gives_the_same_result():
    g = torch.Generator().manual_seed(2)
    x, w = torch.randn(2, 16, 9, 9, generator=g), torch.randn(8, 16, 3, 3, generator=g)
    u = transform_weight(w)
    torch.testing.assert_close(winograd_conv(x.to(memory_format=torch.channels_last), u, (1, 1)),
                               winograd_conv(x, u, (1, 1)), rtol=0, atol=0)


def test_transform_weight_refuses_other_kernels():
    with pytest.raises(ValueError, match=r"\(K, C, 3, 3\)"):
        transform_weight(torch.zeros(4, 4, 5, 5))


class _SamePadConv(nn.Conv2d):
    """TensorFlow-style static 'same' padding: the forward pads, then convolves without padding."""

    def forward(self, x):
        return F.conv2d(F.pad(x, (1, 1, 1, 1)), self.weight, self.bias)


class _Plain(nn.Conv2d):
    """A subclass that keeps Conv2d's forward."""


@pytest.mark.parametrize("module,expected", [
    (nn.Conv2d(256, 256, 3, padding=1), True),
    (nn.Conv2d(256, 512, 3, padding="same"), True),
    (_Plain(256, 256, 3), True),
    (nn.Conv2d(128, 256, 3, padding=1), False),          # too few channels to pay
    (nn.Conv2d(256, 128, 3, padding=1), False),
    (nn.Conv2d(256, 256, 3, stride=2, padding=1), False),
    (nn.Conv2d(256, 256, 3, dilation=2, padding=2), False),
    (nn.Conv2d(256, 256, 3, groups=2, padding=1), False),
    (nn.Conv2d(256, 256, 5, padding=2), False),
    (nn.Conv2d(256, 256, 3, padding=1, padding_mode="reflect"), False),
    (_SamePadConv(256, 256, 3), False),                  # its forward does more than its attributes say
    (nn.Linear(256, 256), False),
])
def test_eligible_modules(module, expected):
    assert eligible(module) is expected


def test_large_maps_and_tiny_outputs_run_direct():
    big = int(MAX_PIXELS ** 0.5) + 1
    assert _tiling(torch.zeros(1, 1, big, big), 1) is None
    assert _tiling(torch.zeros(1, 1, 5, 5), 0) is None  # 3×3 output: most of a 4×4 tile wasted
    assert _tiling(torch.zeros(1, 1, 6, 6), 0) == (0, 0)
    assert _tiling(torch.zeros(1, 1, 8, 8), "same") == (1, 1)
    assert _tiling(torch.zeros(1, 1, 8, 8), (1, 2)) == (1, 2)


def _wide_net(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(256, 256, 3, padding=1), nn.BatchNorm2d(256), nn.ReLU(),
        _SamePadConv(256, 256, 3), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(256, 10),
    )
    with torch.no_grad():
        net[6].running_mean.uniform_(-0.1, 0.1)
        net[6].running_var.uniform_(0.5, 1.5)
    return net.to(dtype).eval()


@pytest.fixture(scope="module")
def wide():
    net = _wide_net()
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    exact = _exact(net, x, winograd=False)  # the model's own convolutions
    assert exact.engine == "incremental" and exact.extra["winograd_layers"] == ()
    return net, x, exact


@pytest.fixture(scope="module")
def engines(wide):
    """The incremental engine of the wide net with the model's own convolutions, and with Winograd's."""
    from cnn_explain.attribution.occlude.incremental import IncrementalOcclusion
    from cnn_explain.attribution.occlude.windows import make_grid

    net, x, _ = wide
    rows, cols = make_grid((16, 16), (4, 4), (2, 2)).positions()
    with torch.inference_mode():
        return IncrementalOcclusion(net, x, rows, cols), IncrementalOcclusion(net, x, rows, cols, lowp="winograd")


def _approx(net, x, precision, **kw):
    return occlusion(net, x, window=4, stride=2, measure="logit", mode="approx", approx_drill=1.0, approx_tau=None,
                     approx_precision=precision, progress=False, **kw)


def _exact(net, x, **kw):
    return occlusion(net, x, window=4, stride=2, measure="logit", mode="incremental", progress=False, **kw)


def test_every_position_by_winograd_is_the_exact_map(wide):
    net, x, exact = wide
    r = _approx(net, x, "float32")
    assert r.engine == "incremental"
    assert r.extra["precision"] == "float32"
    # the 256 → 256 convolutions; not the first (3 channels in) nor the one whose forward pads itself
    assert r.extra["winograd_layers"] == ("2", "5")
    scale = float(exact.drops.abs().max())
    assert float((r.drops - exact.drops).abs().max()) < 1e-4 * scale
    a, e = r.drops.flatten().double(), exact.drops.flatten().double()
    assert float(torch.corrcoef(torch.stack([a, e]))[0, 1]) > 0.99999


def test_winograd_false_runs_the_models_convolutions(wide):
    net, x, exact = wide
    r = _approx(net, x, "float32", winograd=False)
    assert r.extra["winograd_layers"] == ()
    torch.testing.assert_close(r.drops, exact.drops, rtol=0, atol=1e-5 * float(exact.drops.abs().max()))


def test_exact_mode_by_winograd_is_as_close_to_float64_as_direct(wide):
    net, x, direct = wide
    r = _exact(net, x)  # default: Winograd for a float32 model on the CPU
    assert r.extra["winograd_layers"] == ("2", "5") and "precision" not in r.extra
    truth = _exact(_wide_net(torch.float64), x.double(), winograd=False).drops
    scale = float(truth.abs().max())
    err = lambda drops: float((drops.double() - truth).abs().max()) / scale  # noqa: E731
    assert err(r.drops) < 3 * err(direct.drops) + 1e-6, (err(r.drops), err(direct.drops))
    batched = occlusion(net, x, window=4, stride=2, measure="logit", mode="batched", progress=False)
    assert batched.extra["winograd_layers"] == ()  # plain forwards: nothing by Winograd


def test_winograd_is_checked():
    with pytest.raises(TypeError, match="winograd"):
        _exact(_wide_net(), torch.rand(1, 3, 16, 16), winograd="yes")


def test_float64_model_runs_winograd_in_float64(wide):
    _, x, _ = wide
    net = _wide_net(torch.float64)
    exact = _exact(net, x.double())
    r = _approx(net, x.double(), "float32", winograd=True)  # asked for: Winograd in the model's own dtype
    assert r.extra["precision"] == "float64" and r.extra["winograd_layers"] == ("2", "5")
    torch.testing.assert_close(r.drops, exact.drops, rtol=0, atol=1e-10 * float(exact.drops.abs().max()))
    assert _approx(net, x.double(), "auto").extra["winograd_layers"] == ()  # by default float64 stays direct


@pytest.mark.parametrize("native,precision,layers", [(False, "float32", ("2", "5")), (True, "bfloat16", ())])
def test_auto_picks_winograd_where_bfloat16_is_not_native(monkeypatch, wide, native, precision, layers):
    net, x, exact = wide
    monkeypatch.setattr("cnn_explain.attribution.occlude.api.native_bfloat16", lambda: native)
    r = _approx(net, x, "auto")
    assert (r.extra["precision"], r.extra["winograd_layers"]) == (precision, layers)
    a, e = r.drops.flatten().double(), exact.drops.flatten().double()
    assert float(torch.corrcoef(torch.stack([a, e]))[0, 1]) > 0.999


def test_model_inputs_and_global_state_are_left_alone(tmp_path):
    """The contract (`tests/test_contract.py`) on a model whose convolutions run by Winograd: a model in train
    mode with a frozen bias and a ``.grad``, its input, and the global state come back as found."""
    from conftest import GlobalState, InputSnapshot, ModelSnapshot

    net = _wide_net().train()
    net[-1].bias.requires_grad_(False)
    net[2].weight.grad = torch.full_like(net[2].weight, 0.5)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    snaps = ModelSnapshot(net), InputSnapshot(x), GlobalState()
    for mode in ("incremental", "approx"):
        r = occlusion(net, x, window=4, stride=2, mode=mode, approx_precision="float32", progress=False)
        assert r.extra["winograd_layers"] == ("2", "5")
    for snap in snaps:
        snap.assert_unchanged()


@pytest.mark.parametrize("mode,precision,winograd,device,dtype,expected", [
    ("exact", "auto", None, "cpu", torch.float32, "winograd"),
    ("exact", "auto", None, "meta", torch.float32, None),        # another device (CUDA): its own conv algorithms
    ("exact", "auto", True, "meta", torch.float32, "winograd"),  # unless asked for
    ("exact", "auto", None, "cpu", torch.float64, None),
    ("exact", "bfloat16", None, "cpu", torch.float32, "winograd"),  # approx_precision only matters to approx
    ("approx", "bfloat16", None, "meta", torch.float32, torch.bfloat16),
    ("approx", "auto", None, "meta", torch.float32, None),
    ("approx", "float32", False, "cpu", torch.float32, None),
])
def test_how_changes_are_computed(monkeypatch, mode, precision, winograd, device, dtype, expected):
    from cnn_explain.attribution.occlude import api

    monkeypatch.setattr(api, "native_bfloat16", lambda: True)  # even so, never bfloat16 off the CPU by default
    param = torch.zeros(1, device=device, dtype=dtype)
    assert api._changes(api.Mode(mode), api.Precision(precision), winograd, dtype, param) == expected


def test_memory_counts_the_transformed_weights(engines):
    """The engine's fixed memory grows by the transformed weights (36 per channel pair of every Winograd layer),
    and its memory per position by the largest layer's temporaries."""
    plain, wino = engines
    assert wino.fixed_bytes() - plain.fixed_bytes() == 2 * 36 * 256 * 256 * 4
    assert wino.bytes_per_position() > plain.bytes_per_position()


_PEAK = """
import warnings, torch
from torch import nn
from cnn_explain.attribution.occlude import occlusion
warnings.simplefilter("ignore")
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(128, 256, 3, padding=1),
                      nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(),
                      nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Linear(256, 5)).eval()
x = torch.rand(1, 3, 96, 96)
occlusion(model, x[..., :32, :32], window=8, stride=8, progress=False)  # kernels and allocator warmed up
for line in open("/proc/self/status"):
    if line.startswith("VmRSS"):
        before = int(line.split()[1]) * 1024
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
r = occlusion(model, x, window=8, stride=4, progress=False, memory_budget=100 * 2**20, mode="incremental")
for line in open("/proc/self/status"):
    if line.startswith("VmHWM"):
        print(r.engine, len(r.extra["winograd_layers"]), r.batch_size, int(line.split()[1]) * 1024 - before)
"""


@pytest.mark.slow
def test_peak_memory_with_winograd_stays_in_the_budget(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "peak.py"
    script.write_text(_PEAK)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=True, timeout=300,
                         env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}).stdout.split()
    engine, layers, batch, peak = out[0], int(out[1]), int(out[2]), int(out[3])
    assert (engine, layers) == ("incremental", 2) and batch > 1  # the 256 → 256 layers
    assert peak <= 100 * 2**20, peak / 2**20


def test_cost_model_counts_winograd_convolutions_at_their_speed(engines):
    """Exact mode's engine choice: a Winograd convolution's MACs count 1 / WINOGRAD_SPEEDUP; nothing else moves."""
    from cnn_explain.attribution.occlude.cost import WINOGRAD_SPEEDUP, predict
    from cnn_explain.attribution.occlude.grouping import MAC_RATE
    plain, wino = engines
    nodes = wino.winograd_nodes()
    assert [n.target for n in nodes] == ["2", "5"] and plain.winograd_nodes() == []
    boxes = wino.grouping.boxes
    macs = sum(boxes[n].computed_macs if n in boxes else wino.plan[n].macs.computed for n in nodes)
    before, after = predict(plain, 49, 16, 16), predict(wino, 49, 16, 16)
    assert after.batched_s == before.batched_s
    assert after.incremental_s == pytest.approx(before.incremental_s - 49 * macs * (1 - 1 / WINOGRAD_SPEEDUP) / MAC_RATE)
