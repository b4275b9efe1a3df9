"""Shared pieces of the benchmarks: the common row, timing, peak memory, the machine, and the doc writer.

Each benchmark owns one section of ``docs/performance.md``, between
``<!-- bench:NAME:start -->`` and ``<!-- bench:NAME:end -->``; `write_section` replaces it.
A benchmark module that ``benchmarks/run_all.py`` gathers exposes
``rows(quick: bool) -> list[Row]`` (optionally a ``device`` keyword: then it is
also run on CUDA when CUDA is available).
"""

from __future__ import annotations

import os
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

PERFORMANCE_MD = Path(__file__).resolve().parents[1] / "docs" / "performance.md"
KEY_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16")


@dataclass(frozen=True)
class Row:
    """One line of the summary table: a piece of work done by ``alternative`` and by cnn_explain.

    Attributes:
        work: what is computed (model, input, size).
        alternative: the tool a user would pick instead, and how it was configured.
        alt_s: its time in seconds (the fastest of the interleaved repeats).
        ours: the cnn_explain call.
        ours_s: its time in seconds (fastest of the same repeats).
        accuracy: how our result compares with the alternative's (text with its unit).
        peak_mib: the rise of peak resident memory during our fastest run (None: not measured).
        cuda_s: our time on CUDA (None: no CUDA, or the capability was not run there).
    """

    work: str
    alternative: str
    alt_s: float
    ours: str
    ours_s: float
    accuracy: str
    peak_mib: float | None = None
    cuda_s: float | None = None

    @property
    def ratio(self) -> float:
        """Our time ÷ the alternative's (below 1: we are faster)."""
        return self.ours_s / self.alt_s if self.alt_s > 0 else float("nan")


def _vm(key: str) -> int:
    """A ``/proc/self/status`` field in KiB (0 where there is none)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak() -> int:
    """Reset the peak RSS (Linux ``clear_refs``) and return the current RSS in KiB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _vm("VmRSS")


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """``(seconds, peak RSS rise in MiB, result)`` of one call of ``fn``."""
    before = reset_peak()
    t0 = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t0
    return seconds, max(0.0, (_vm("VmHWM") - before) / 1024), out


def interleaved(runs: dict[str, Callable[[], Any]], repeat: int, warmup: int = 1) -> dict[str, tuple[float, float, Any]]:
    """Run each of ``runs`` ``repeat`` times, alternating who goes first; the fastest run of each.

    Each runs ``warmup`` untimed calls first (one-time kernel creation, first touch of memory).

    Returns:
        name -> ``(best seconds, peak MiB of that run, result of the last run)``.
    """
    names = list(runs)
    for _ in range(warmup):
        for name in names:
            runs[name]()
    best: dict[str, tuple[float, float, Any]] = {}
    for r in range(repeat):
        for name in (names if r % 2 == 0 else names[::-1]):
            s, peak, out = timed(runs[name])
            if name not in best or s < best[name][0]:
                best[name] = (s, peak, out)
            else:
                best[name] = (best[name][0], best[name][1], out)
    return best


def machine() -> str:
    """One line naming the CPU, its relevant features, the cores and the software (figures differ by machine)."""
    import torch

    from cnn_explain.attribution.occlude.lowp import cpu_flags, cpu_name, native_bfloat16

    flags = cpu_flags()
    feats = ", ".join(f for f in KEY_FLAGS if f in flags) or "none listed"
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    return (f"CPU: {cpu_name() or platform.machine()} ({feats}; PyTorch kernels: "
            f"{torch.backends.cpu.get_cpu_capability()}; native bfloat16: {'yes' if native_bfloat16() else 'no'}), "
            f"{cores} cores for this process, {cuda}; torch {torch.__version__}, Python {platform.python_version()}")


def write_section(name: str, title: str, text: str, path: Path = PERFORMANCE_MD, first: bool = False) -> None:
    """Replace benchmark ``name``'s section of ``path`` with ``text``.

    A new section goes under ``## title``: at the end, or right after the document's
    ``# `` title when ``first``.
    """
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    block = f"{start}\n{text}\n{end}"
    old = path.read_text() if path.exists() else "# Performance\n"
    if start in old and end in old:
        new = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, old, flags=re.S)
    elif first and old.startswith("# "):
        head, _, rest = old.partition("\n")
        new = f"{head}\n\n## {title}\n\n{block}\n\n{rest.lstrip(chr(10))}"
    else:
        new = old.rstrip("\n") + f"\n\n## {title}\n\n" + block + "\n"
    path.write_text(new)
