"""One benchmark run, one table: every capability against the tool a user would pick instead (``make bench``).

Usage: ``python benchmarks/run_all.py [--quick] [--no-write] [--only NAME ...]``

Gathers every ``benchmarks/*.py`` module that defines ``rows(quick: bool) ->
list[Row]`` (`_perfdoc.Row`), runs them one after another in this process (each
module interleaves and repeats its own pair of runs), and writes one table —
work, alternative, ours, ratio, accuracy against the alternative, peak memory,
and the machine (CPU name and features) — to the ``summary`` section of
``docs/performance.md``. When CUDA is available, modules whose ``rows`` take a
``device`` keyword run again on ``"cuda"`` and the table gets a CUDA column.
``--quick`` (small inputs, few repeats, a few minutes) is the test suite's
smoke run and writes nothing unless ``--write`` is given. Modules without
``rows`` (benchmarks that only have ``main(argv)``) are listed as not gathered.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _perfdoc import Row, machine, write_section  # noqa: E402

SKIP = {"run_all", "models", "__init__"}


def discover() -> list[Path]:
    """Benchmark modules in name order (helpers such as models.py and files starting with _ are skipped)."""
    return [p for p in sorted(HERE.glob("*.py")) if p.stem not in SKIP and not p.stem.startswith("_")]


def load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def _gather(module: ModuleType, quick: bool, cuda: bool) -> list[Row]:
    """The module's CPU rows, with ``cuda_s`` filled from a CUDA run where the module supports one."""
    cpu = list(module.rows(quick))
    if not cuda or "device" not in inspect.signature(module.rows).parameters:
        return cpu
    on_gpu = {(r.work, r.alternative): r.ours_s for r in module.rows(quick, device="cuda")}
    return [Row(**{**r.__dict__, "cuda_s": on_gpu.get((r.work, r.alternative))}) for r in cpu]


def _mib(v: float | None) -> str:
    return "–" if v is None else f"{v:.0f}"


def table(rows: list[Row], cuda: bool, quick: bool, seconds: float, not_gathered: list[str]) -> str:
    """The summary section's Markdown: the machine, the table, and how it was measured."""
    head = "| work | alternative | alternative s | cnn_explain | ours s | ours ÷ alternative | accuracy vs alternative | peak MiB (ours) |"
    rule = "|---|---|---:|---|---:|---:|---|---:|"
    if cuda:
        head, rule = head + " ours on CUDA s |", rule + "---:|"
    lines = [machine(), "", head, rule]
    for r in rows:
        line = (f"| {r.work} | {r.alternative} | {r.alt_s:.3f} | {r.ours} | {r.ours_s:.3f} | {r.ratio:.2f} "
                f"| {r.accuracy} | {_mib(r.peak_mib)} |")
        lines.append(line + (f" {'–' if r.cuda_s is None else f'{r.cuda_s:.3f}'} |" if cuda else ""))
    lines += ["", f"Written by `python benchmarks/run_all.py{' --quick' if quick else ''}` in {seconds / 60:.1f} "
              "minutes: each pair ran in the same process, interleaved (who goes first alternates), after one "
              "untimed call each unless the row's module says otherwise; times are the fastest of the repeats, "
              "peak MiB the rise of peak resident memory during our fastest run (– not measured). Ratios below 1: "
              "cnn_explain is faster. Figures from another CPU (see the line above) are not comparable."]
    if not cuda:
        lines.append("No CUDA device here: the CUDA column appears only when one is present, and no CUDA figures "
                     "were measured for this table.")
    if not_gathered:
        lines.append(f"Benchmarks without `rows()`, not in this table: {', '.join(not_gathered)} (their own "
                     "sections below).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs, few repeats (the test suite's smoke run)")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/performance.md")
    parser.add_argument("--write", action="store_true", help="with --quick: update docs/performance.md anyway")
    parser.add_argument("--only", nargs="+", help="module names to run (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    start = time.perf_counter()
    rows: list[Row] = []
    failed, not_gathered = [], []
    for path in discover():
        if args.only and path.stem not in args.only:
            continue
        try:
            module = load(path)
            if not callable(getattr(module, "rows", None)):
                not_gathered.append(path.stem)
                continue
            print(f"== {path.stem}", flush=True)
            rows += _gather(module, args.quick, cuda)
        except Exception:  # keep going: one broken benchmark must not hide the others
            traceback.print_exc()
            failed.append(path.stem)
    text = table(rows, cuda, args.quick, time.perf_counter() - start, not_gathered)
    print(text, flush=True)
    if not args.no_write and (not args.quick or args.write):
        write_section("summary", "Every capability against its alternative (one run)", text, first=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
