"""Benchmarks are programs: each imports and has main(argv); the performance.md section writer keeps other sections;
``run_all.py --quick`` (the one-table run, small) runs end to end."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
HELPERS = {"run_all", "models", "_perfdoc"}


@pytest.fixture
def bench_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))


@pytest.mark.parametrize("path", sorted(BENCH.glob("*.py")), ids=lambda p: p.stem)
def test_benchmark_imports(path, bench_path):
    spec = importlib.util.spec_from_file_location(f"_bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name, None)
    if path.stem not in HELPERS:
        assert callable(getattr(module, "main", None)), f"{path.name} has no main(argv)"


def test_write_section_replaces_only_its_own(tmp_path, bench_path):
    from _perfdoc import write_section

    doc = tmp_path / "performance.md"
    write_section("a", "A", "first", doc)
    write_section("b", "B", "other", doc)
    write_section("a", "A", "second", doc)
    write_section("top", "Top", "summary", doc, first=True)
    text = doc.read_text()
    assert "second" in text and "first" not in text and "other" in text
    assert text.count("## A") == 1 and text.count("<!-- bench:a:start -->") == 1
    assert text.startswith("# Performance\n\n## Top\n") and text.index("summary") < text.index("second")
    sys.modules.pop("_perfdoc", None)


def test_table_has_a_cuda_column_only_with_cuda(bench_path):
    from _perfdoc import Row
    from run_all import table

    rows = [Row("work", "captum", 2.0, "ours()", 1.0, "max Δ 0", 12.0, cuda_s=0.1)]
    assert rows[0].ratio == 0.5
    cpu, gpu = table(rows, False, True, 60.0, []), table(rows, True, True, 60.0, ["style"])
    assert "CUDA s" not in cpu and "No CUDA device here" in cpu and "| 0.50 |" in cpu
    assert "ours on CUDA s" in gpu and "| 0.100 |" in gpu and "style" in gpu
    assert cpu.splitlines()[0].startswith("CPU: ")  # the machine: figures are only comparable on alike CPUs
    for m in ("run_all", "_perfdoc"):
        sys.modules.pop(m, None)


@pytest.mark.slow
def test_quick_run_gathers_every_comparison_into_one_table(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--quick", "--no-write"], capture_output=True,
                         text=True, env=env, timeout=240, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    table = [line for line in out.stdout.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| work | alternative |") and "peak MiB" in table[0]
    body = "\n".join(table[1:])  # the rule line (|---|) does not start with "| "
    for alternative in ("captum IntegratedGradients", "captum LayerGradCam", "torch-cam GradCAM", "openTSNE",
                        "umap-learn", "plain forward loop", "captum Occlusion"):
        assert alternative in body, f"no row against {alternative}"
    for line in table[1:]:  # every ratio is a number: both sides ran
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert float(cells[5]) > 0, line
