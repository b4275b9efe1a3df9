"""Run every benchmark: each ``benchmarks/*.py`` that defines ``main(argv)`` (``make bench``).

Usage: ``python benchmarks/run_all.py [--quick]`` — extra arguments are passed to every benchmark.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
SKIP = {"run_all", "models", "__init__"}


def discover() -> list[Path]:
    """Benchmark modules in name order (helpers such as models.py and files starting with _ are skipped)."""
    return [p for p in sorted(HERE.glob("*.py")) if p.stem not in SKIP and not p.stem.startswith("_")]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(HERE.parent))
    failed = []
    for path in discover():
        spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        if not callable(getattr(mod, "main", None)):
            continue
        print(f"== {path.stem}", flush=True)
        try:
            rc = mod.main(argv)
        except Exception:  # keep going: one broken benchmark must not hide the others
            traceback.print_exc()
            rc = 1
        if rc:
            failed.append(path.stem)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
