"""The report folder: may ``out`` be written, strict JSON for the manifest, the atomic replacement.

A folder is replaced only when it is missing, empty, or a previous cnn_explain
report that holds nothing but the files its manifest lists, so no file the
toolkit did not write is ever deleted or overwritten.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["GENERATOR", "check_out_folder", "strict_json", "move_into_place"]

GENERATOR = "cnn_explain"


def _report_files(manifest: Any) -> set[str] | None:
    """The files a cnn_explain report's manifest lists (index, manifest, figures), or None if it is not one."""
    if not isinstance(manifest, dict):
        return None
    ours = manifest.get("generator") == GENERATOR or (  # reports written before "generator" was added
        isinstance(manifest.get("schema_version"), int) and {"version", "sections", "figures"} <= set(manifest))
    figures = manifest.get("figures")
    if not ours or not isinstance(figures, list) or not all(isinstance(f, dict) for f in figures):
        return None
    listed = {"index.html", "manifest.json"}
    listed |= {str(f[k]) for f in figures for k in ("file", "svg") if f.get(k)}
    return listed


def check_out_folder(out: str | os.PathLike, argname: str = "out") -> Path:
    """Check that a report may be written to ``out``; nothing is changed on disk.

    ``out`` may be missing, an empty folder, or a previous cnn_explain report: a
    folder whose ``manifest.json`` identifies a report and which holds nothing
    but the files that manifest lists. Anything else is refused, so no file the
    toolkit did not write is ever deleted or overwritten.

    Args:
        out: the report folder.
        argname: the name used in error messages.

    Returns:
        ``out`` as a Path.

    Raises:
        ValueError: ``out`` is a file, a folder that is not a report, or a report
            folder holding other files too; the message lists what is there and how to proceed.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{argname}={str(out)!r} is a file; give a folder for the report")
    if not out.is_dir() or not any(out.iterdir()):
        return out
    present = sorted(str(f.relative_to(out)) for f in out.rglob("*") if not f.is_dir())
    listed = None
    if (out / "manifest.json").is_file():
        try:
            listed = _report_files(json.loads((out / "manifest.json").read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, ValueError):
            listed = None
    if listed is None:
        shown = ", ".join(present[:5]) + (f" and {len(present) - 5} more" if len(present) > 5 else "")
        raise ValueError(f"{argname}={str(out)!r} is a folder that is not a cnn_explain report (it holds {shown}); "
                         "nothing was changed: choose a new or empty folder")
    foreign = [f for f in present if f not in listed]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ValueError(f"{argname}={str(out)!r} is a previous report that also holds files it did not write "
                         f"({shown}); nothing was changed: move those files elsewhere or choose another folder")
    return out


def strict_json(value: Any) -> Any:
    """``value`` with every NaN / infinity replaced by None, so that it is strict JSON."""
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


def move_into_place(tmp: Path, out: Path) -> None:
    """Replace ``out`` by ``tmp``; the old report is removed only once the new one is in place."""
    check_out_folder(out)  # again: files may have been saved into it while the report was being built
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old / out.name, out)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
