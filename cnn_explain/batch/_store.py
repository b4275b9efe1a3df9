"""Parquet shards and ``manifest.json``: atomic writes, verification, reading back.

Shard ``k`` holds samples ``k·S … (k+1)·S - 1`` (``S`` = ``shard_size``), so the
partition depends on the data and the settings only. A shard is written to a
hidden temporary file, flushed and renamed; it counts as done only once the
manifest lists it with its row count and sha256, and a resume re-checks both.
A shard half-written when a run was killed is therefore never read as complete.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["ShardInfo", "Store", "read_results", "iter_shards"]

MANIFEST = "manifest.json"
FORMAT = 1


@dataclass(frozen=True)
class ShardInfo:
    """One written shard: file name, the sample range, rows and the file's sha256."""

    file: str
    start: int
    stop: int
    rows: int
    sha256: str


def shard_name(k: int) -> str:
    """``shard-00007.parquet``."""
    return f"shard-{k:05d}.parquet"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Store:
    """The output folder of one run.

    Args:
        out: the folder (created).
        header: the manifest's fixed part (settings, model fingerprint, data); a
            resume must find the same.
        resume: keep verified shards of an earlier run with the same header;
            False starts over (earlier shards are removed).

    Raises:
        ValueError: ``resume=True`` and the folder holds a run with other
            settings, model or data.
    """

    def __init__(self, out: str | os.PathLike, header: dict[str, Any], resume: bool) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.header = json.loads(json.dumps(header))  # as it reads back from the manifest (tuples -> lists)
        self.done: dict[int, ShardInfo] = {}
        old = self._read_manifest()
        if old is not None and resume:
            keys = ("format", "settings", "model", "data")
            diff = [k for k in keys if old.get(k) != self.header.get(k)]
            if diff:
                raise ValueError(f"out={str(out)!r} holds a run with different {', '.join(diff)}; pass resume=False "
                                 "to start over there, or another out=")
            for s in old.get("shards", []):
                info = ShardInfo(**s)
                if self._valid(info):
                    self.done[info.start // header["data"]["shard_size"]] = info
        elif not resume:
            for p in [*self.out.glob("shard-*.parquet"), *self.out.glob(".shard-*.parquet.tmp")]:
                p.unlink()
        self._write_manifest(complete=False)

    def _read_manifest(self) -> dict[str, Any] | None:
        p = self.out / MANIFEST
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError):
            return None  # a damaged manifest: nothing in it is trusted, every shard is redone

    def _valid(self, info: ShardInfo) -> bool:
        p = self.out / info.file
        return p.is_file() and _sha256(p) == info.sha256

    def write(self, k: int, start: int, table: pa.Table) -> ShardInfo:
        """Write shard ``k`` (samples from ``start``) atomically and record it in the manifest."""
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        data = sink.getvalue().to_pybytes()
        path = self.out / shard_name(k)
        _atomic_write(path, data)
        info = ShardInfo(path.name, start, start + table.num_rows, table.num_rows, hashlib.sha256(data).hexdigest())
        self.done[k] = info
        self._write_manifest(complete=False)
        return info

    def finish(self, seconds: float, n_shards: int) -> int:
        """Mark the run complete; return its row count. Raises ``RuntimeError`` if a shard is missing."""
        missing = [k for k in range(n_shards) if k not in self.done]
        if missing:
            raise RuntimeError(f"shards {missing} were not written")
        self._write_manifest(complete=True, seconds=seconds)
        return sum(s.rows for s in self.done.values())

    def _write_manifest(self, complete: bool, seconds: float | None = None) -> None:
        shards = [vars(self.done[k]) for k in sorted(self.done)]
        body = {**self.header, "shards": shards, "rows": sum(s["rows"] for s in shards), "complete": complete}
        if seconds is not None:
            body["seconds"] = round(seconds, 3)
        _atomic_write(self.out / MANIFEST, json.dumps(body, indent=1, default=str).encode())


def read_manifest(out: str | os.PathLike) -> dict[str, Any]:
    """The run's manifest; ``ValueError`` if ``out`` holds none."""
    p = Path(out) / MANIFEST
    if not p.is_file():
        raise ValueError(f"out={str(out)!r} holds no {MANIFEST}; run explain_dataset(..., out=...) first")
    return json.loads(p.read_text())


def iter_shards(out: str | os.PathLike, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """The verified shards of a run, in order (``ValueError`` on a missing or altered shard)."""
    man = read_manifest(out)
    for s in man["shards"]:
        p = Path(out) / s["file"]
        if not p.is_file() or _sha256(p) != s["sha256"]:
            raise ValueError(f"{p}: missing or altered since it was written; rerun with resume=True to redo it")
        yield pq.read_table(p, columns=columns)


def map_shape(man: dict[str, Any]) -> tuple[int, int]:
    """``(H, W)`` of the stored maps."""
    return tuple(man["data"]["map_hw"])


def to_frame(table: pa.Table, man: dict[str, Any]):
    """A shard as a DataFrame: map columns as ``(H, W)`` arrays, the thumbnail as ``(h, w, C)`` uint8."""
    h, w = map_shape(man)
    df = table.drop_columns([c for c in table.column_names if c.endswith("_map") or c == "thumbnail"]).to_pandas()
    for name in table.column_names:
        if name.endswith("_map"):
            flat = table.column(name).combine_chunks().flatten().to_numpy(zero_copy_only=False)
            df[name] = list(flat.reshape(-1, h, w))
        elif name == "thumbnail":
            th, tw, c = man["data"]["thumbnail_hwc"]
            flat = table.column(name).combine_chunks().flatten().to_numpy(zero_copy_only=False)
            df[name] = list(np.asarray(flat, dtype=np.uint8).reshape(-1, th, tw, c))
    return df


def read_results(out: str | os.PathLike, columns: list[str] | None = None):
    """All rows of a run as a ``pandas.DataFrame`` (maps as ``(H, W)`` NumPy arrays), ordered by ``index``.

    Args:
        out: the run's folder.
        columns: read only these columns (default: all).

    Raises:
        ValueError: no manifest, an incomplete run, or a shard altered since it was written.
    """
    import pandas as pd

    man = read_manifest(out)
    if not man.get("complete"):
        raise ValueError(f"out={str(out)!r}: the run is not complete; finish it with explain_dataset(..., resume=True)")
    frames = [to_frame(t, man) for t in iter_shards(out, columns)]
    return pd.concat(frames, ignore_index=True)
