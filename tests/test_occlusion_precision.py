"""Approximate occlusion picks the precision that is fast on this CPU, and says which ran.

The CPU's capability is mocked both ways, so both paths run on any machine; the
maps are compared with exact occlusion (an independent computation in float32).
"""

from __future__ import annotations

import pytest
import torch

from cnn_explain.attribution.occlude import lowp
from cnn_explain.attribution.occlude import occlusion
from cnn_explain.models import tiny_vgg


@pytest.fixture(scope="module")
def case():
    torch.manual_seed(0)
    net = tiny_vgg().eval()
    return net, torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _mock_cpu(monkeypatch, amx: bool, avx512_bf16: bool) -> None:
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)


@pytest.mark.parametrize("amx,avx512_bf16,expected", [
    (False, False, "float32"),   # AVX2 / AVX-512 without BF16: emulated bfloat16 is slower
    (False, True, "bfloat16"),   # AVX512-BF16
    (True, False, "bfloat16"),   # AMX tiles
])
def test_auto_precision_follows_the_cpu(monkeypatch, case, amx, avx512_bf16, expected):
    net, x = case
    _mock_cpu(monkeypatch, amx, avx512_bf16)
    assert lowp.native_bfloat16() is (expected == "bfloat16")
    r = occlusion(net, x, window=4, stride=2, mode="approx", approx_drill=1.0, progress=False, compare_exact=True)
    assert r.extra["precision"] == expected
    forced = occlusion(net, x, window=4, stride=2, mode="approx", approx_drill=1.0, progress=False,
                       approx_precision=expected)
    torch.testing.assert_close(r.attribution, forced.attribution, rtol=0, atol=0)  # auto == that choice
    exact = occlusion(net, x, window=4, stride=2, mode="exact", progress=False)
    tol = 1e-5 if expected == "float32" else 5e-2  # every position computed: float32 is the exact map
    scale = float(exact.attribution.abs().max())
    assert float((r.attribution - exact.attribution).abs().max()) <= tol * scale
    assert r.deviation["pearson"] > 0.99


def test_flags_decide_where_torch_has_no_helpers(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.setattr(lowp, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert not lowp.native_bfloat16()
    monkeypatch.setattr(lowp, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    assert lowp.native_bfloat16()


def test_no_onednn_means_no_bfloat16(monkeypatch):
    _mock_cpu(monkeypatch, True, True)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert not lowp.native_bfloat16()


def test_cpu_name_and_flags_come_from_the_os():
    flags = lowp.cpu_flags()
    assert isinstance(flags, frozenset) and isinstance(lowp.cpu_name(), str)
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        pytest.skip("no /proc/cpuinfo on this OS")
    assert lowp.cpu_name() in text and all(f in text for f in list(flags)[:20])


@pytest.mark.parametrize("var,value,native", [
    ("ONEDNN_MAX_CPU_ISA", "AVX2", False),          # oneDNN limited below native bfloat16: emulated
    ("DNNL_MAX_CPU_ISA", "avx512_core_vnni", False),  # the old name, any case
    ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX", True),
    ("ONEDNN_MAX_CPU_ISA", "ALL", True),
])
def test_a_onednn_isa_limit_is_honoured(monkeypatch, var, value, native):
    _mock_cpu(monkeypatch, True, True)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setenv(var, value)
    assert lowp.native_bfloat16() is native
