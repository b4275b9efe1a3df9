"""Low-precision *change* propagation for approximate incremental occlusion.

Convolutions dominate the cost of incremental occlusion. On CPUs with native
bfloat16 matrix units (AMX, AVX512-BF16) a bfloat16 convolution ran 6.4× faster
than float32 here (``(231, 512, 11, 11)`` by 512 3×3 filters: 66 ms against
423 ms). Running the occluded network in bfloat16 outright is too coarse for
occlusion: the score drops are a few per cent of the score, and on the VGG-11
benchmark bfloat16 rounding of the *unchanged* activations (recomputed inside
every box, with a batch-size-dependent accumulation order) gave a noise of 40 %
of the drops' spread (Pearson 0.95 to the exact map).

A convolution is linear, so the change of its output is the convolution of the
change of its input: ``conv(x + d) = conv(x) + conv_nobias(d)``. Keeping the
clean values in float32 (the cache) and computing only ``conv_nobias(d)`` in
bfloat16 makes the rounding error proportional to the *change*: where nothing
changed, ``d`` is exactly zero and the clean float32 value comes back exactly.
Every other operation (activations, pooling, BatchNorm, the classifier) runs in
float32 on ``clean + change``.

On CPUs without native bfloat16 (AVX2, AVX-512 without BF16) bfloat16 is
emulated and slower than float32, so ``approx_precision="auto"`` runs float32
there (`native_bfloat16` decides; the result's ``extra["precision"]`` says
which ran). Float32 convolutions already run near the CPU's peak, so what is
left is doing fewer multiplications: the large 3×3 convolutions' changes run by
Winograd F(4×4, 3×3) (`.winograd`, ``extra["winograd_layers"]``). Int8
(FBGEMM's dynamic quantized convolution, with a scale per position) was
measured too and not used: on AVX2 it ran 1.5-1.75× faster than float32 on the
512-channel layers, less than Winograd's 1.8-2.8×, and its rounding lowered the
benchmark's Pearson correlation from 0.952 to 0.945 (FBGEMM's AVX2 kernels need
7-bit activations: full 8-bit ones saturated, 10 % error).

Example:
    >>> import torch
    >>> from torch import nn
    >>> conv = nn.Conv2d(4, 8, 3).requires_grad_(False)
    >>> x, d = torch.randn(2, 4, 9, 9), torch.zeros(2, 4, 9, 9)
    >>> d[:, :, 3:5, 3:5] = 0.1
    >>> lowp = LowPrecision(torch.bfloat16)
    >>> out = lowp.conv(conv, conv(x), x + d, x)
    >>> float((out - conv(x + d)).abs().max()) < 1e-2, torch.equal(out[..., 0, 0], conv(x)[..., 0, 0])
    (True, True)
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import fx, nn

from .graph import OpKind
from .plan import NodePlan, NodeState

__all__ = ["LowPrecision", "native_bfloat16", "onednn_isa_limit", "cpu_flags", "cpu_name", "BF16_FLAGS",
           "convs_of_changes"]

BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo names of native bfloat16 multiply units
# oneDNN instruction-set limits (``ONEDNN_MAX_CPU_ISA``) below its first native bfloat16 level, AVX512_CORE_BF16
_ISA_WITHOUT_BF16 = frozenset({"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"})


@functools.lru_cache(maxsize=None)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """``(model name, flags)`` of the first processor in ``/proc/cpuinfo`` (empty where there is none)."""
    name, flags = "", frozenset()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux
        return platform.processor(), flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not name:
            name = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = frozenset(value.split())
    return name or platform.processor(), flags


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as the OS lists them (``avx2``, ``avx512_bf16``, ``amx_bf16``, ...)."""
    return _cpuinfo()[1]


def cpu_name() -> str:
    """The CPU's model name (``"AMD EPYC 7B13"``, ``"Intel(R) Xeon(R) ..."``)."""
    return _cpuinfo()[0]


def _torch_bf16_checks() -> list[bool] | None:
    """PyTorch's own answers (AMX tiles, AVX512-BF16), or None where this build lacks the helpers."""
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    checks = [c for c in checks if c is not None]
    if not checks:
        return None
    try:
        return [bool(c()) for c in checks]
    except Exception:  # private helpers failing: fall back to the OS's flags
        return None


def onednn_isa_limit() -> str | None:
    """The instruction-set limit set for oneDNN (``ONEDNN_MAX_CPU_ISA``, or its old name ``DNNL_MAX_CPU_ISA``)."""
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        value = os.environ.get(name, "").strip().upper()
        if value:
            return value
    return None


def native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AMX tiles or AVX512-BF16) for oneDNN.

    Emulated bfloat16 (AVX2, AVX-512 without BF16) converts every operand and
    runs slower than float32, so approximate occlusion's ``"auto"`` precision
    picks float32 there. PyTorch's own checks decide, else the ``/proc/cpuinfo``
    flags in `BF16_FLAGS` for builds without them; an instruction-set limit set
    for oneDNN below AVX512_CORE_BF16 (``ONEDNN_MAX_CPU_ISA=AVX2``) means no
    (PyTorch's checks read the CPU, not that limit).
    """
    if not torch.backends.mkldnn.is_available() or onednn_isa_limit() in _ISA_WITHOUT_BF16:
        return False
    checks = _torch_bf16_checks()
    if checks is not None:
        return any(checks)
    return any(flag in cpu_flags() for flag in BF16_FLAGS)


class LowPrecision:
    """Convolutions of changes in a low-precision dtype, with the weights converted once per module."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self._weights: dict[int, torch.Tensor] = {}

    def handles(self, m: nn.Module) -> bool:
        """Whether the engine gives this convolution (or linear layer) to `conv` / `linear`: all of them."""
        return True

    def memory(self, convs: list[tuple[nn.Module, tuple[int, int], int]]) -> tuple[int, int]:
        """``(bytes held for the call, bytes per position)`` beyond the engine's own, for ``(module, output
        (h, w) per position, bytes per value)`` of the convolutions it is given: none here."""
        return 0, 0

    def conv(self, m: nn.Conv2d, clean_out: torch.Tensor, x: torch.Tensor, clean_x: torch.Tensor | None,
             padding=0) -> torch.Tensor:
        """``m(x)`` as ``clean_out + conv(x - clean_x)``, the second term in ``self.dtype``.

        Args:
            m: the model's convolution (its stride, dilation, groups; zero padding).
            clean_out: ``m(clean_x)`` (float32, broadcastable to the output).
            x: ``(B, C, h, w)`` occluded input; clean_x: the clean input at the same places
                (None: ``x`` is already the change, in ``self.dtype``).
            padding: the padding to apply (0 for pre-padded crops; ``m.padding`` for full maps).
        """
        w = self._weights.get(id(m))
        if w is None or w.shape != m.weight.shape:
            w = self._weights[id(m)] = m.weight.detach().to(self.dtype)
        d = x if clean_x is None else (x - clean_x).to(self.dtype)
        return clean_out + F.conv2d(d, w, None, m.stride, padding, m.dilation, m.groups).to(clean_out.dtype)

    def linear(self, m: nn.Linear, clean_out: torch.Tensor, x: torch.Tensor, clean_x: torch.Tensor) -> torch.Tensor:
        """``m(x)`` as ``clean_out + linear(x - clean_x)`` (in the model's dtype: linear layers are cheap)."""
        return clean_out + F.linear(x - clean_x, m.weight)


def convs_of_changes(plan: dict[fx.Node, NodePlan], modules: dict[str, nn.Module],
                     lowp: LowPrecision | None) -> list[fx.Node]:
    """The convolution nodes (patch or full) whose changes ``lowp`` computes."""
    return [n for n, p in plan.items() if lowp is not None and n.op == "call_module" and p.spec.kind is OpKind.CONV
            and p.state in (NodeState.PATCH, NodeState.FULL) and lowp.handles(modules[n.target])]
