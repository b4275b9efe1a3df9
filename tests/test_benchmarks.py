"""Benchmarks are programs: each imports and has main(argv); the performance.md section writer keeps other sections."""

from __future__ import annotations

import importlib.util
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
    spec.loader.exec_module(module)
    if path.stem not in HELPERS:
        assert callable(getattr(module, "main", None)), f"{path.name} has no main(argv)"


def test_write_section_replaces_only_its_own(tmp_path, bench_path):
    from _perfdoc import write_section

    doc = tmp_path / "performance.md"
    write_section("a", "A", "first", doc)
    write_section("b", "B", "other", doc)
    write_section("a", "A", "second", doc)
    text = doc.read_text()
    assert "second" in text and "first" not in text and "other" in text
    assert text.count("## A") == 1 and text.count("<!-- bench:a:start -->") == 1
    sys.modules.pop("_perfdoc", None)
