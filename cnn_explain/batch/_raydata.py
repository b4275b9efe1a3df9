"""A Ray ``Dataset`` as input: rows with an ``image`` column (and optional ``label``, ``id``, ``mask``, ``box``).

A Ray Dataset has an order (kept with ``preserve_order``) but no cheap access by
position, so it is streamed: rows are explained in order (locally, or by the
actor pool's ``map_batches``) and the driver cuts the stream into the same
shards as any other input. Positions are assigned by the driver as rows come
back; ids are the ``id`` column, else the position.

Resuming: the rows of shards already written are skipped by the local engine
without computing them; the Ray engine cannot skip rows of a stream without
reading it, so it recomputes them and drops the copies (give a folder, a file
list or a torch ``Dataset`` when cheap resumes of huge runs matter).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from ._compute import explain_batch
from ._engines import Job, RayOptions, build_on_worker, ray_session
from ._settings import ModelSource
from ._source import Batch, _mask

__all__ = ["is_ray_dataset", "to_batch_of_rows", "stream_local", "stream_ray", "RowWorker"]


def is_ray_dataset(data: Any) -> bool:
    """True for a ``ray.data.Dataset`` (without importing Ray when it was never imported)."""
    mod = sys.modules.get("ray.data")
    return mod is not None and isinstance(data, mod.Dataset)


def to_batch_of_rows(rows: dict[str, np.ndarray], start: int) -> Batch:
    """A Ray batch (``{"image": (N, ...)}``, optional ``label``/``id``/``mask``/``box``) -> :class:`Batch`.

    ``image`` items are ``(C, H, W)`` floats or ``(H, W[, C])`` uint8 (scaled by 1/255), as
    :func:`cnn_explain.images.to_batch` takes arrays.
    """
    from ..images import to_batch

    if "image" not in rows:
        raise ValueError(f"data: a Ray Dataset needs an 'image' column; it has {sorted(rows)}")
    x = to_batch(list(rows["image"]), argname="data['image']")
    n = x.shape[0]
    index = np.arange(start, start + n, dtype=np.int64)
    ids = [str(v) for v in rows["id"]] if "id" in rows else [str(i) for i in index]
    labels = np.asarray(rows["label"], dtype=np.int64) if "label" in rows else np.full(n, -1, dtype=np.int64)
    key = "mask" if "mask" in rows else "box" if "box" in rows else None
    masks = None if key is None else torch.stack([_mask(m, x.shape[-2:]) for m in rows[key]])
    return Batch(ids, index, x, labels, masks)


def _renumber(table: pa.Table, start: int, has_id: bool) -> pa.Table:
    """Put the driver's positions into ``index`` (and ``id`` when the data has no id column)."""
    index = pa.array(np.arange(start, start + table.num_rows, dtype=np.int64))
    table = table.set_column(table.schema.get_field_index("index"), "index", index)
    if not has_id:
        table = table.set_column(0, "id", pa.array([str(i) for i in index.to_pylist()], pa.string()))
    return table


def _split(buf: list[tuple[int, pa.Table | None]], take: int):
    """The first ``take`` rows of ``buf`` and the rest (a ``None`` piece stands for rows never computed)."""
    head, rest = [], list(buf)
    while take:
        m, t = rest.pop(0)
        if m > take:
            head.append((take, None if t is None else t.slice(0, take)))
            rest.insert(0, (m - take, None if t is None else t.slice(take)))
            take = 0
        else:
            head.append((m, t))
            take -= m
    return head, rest


def _cut(items: Iterator[tuple[int, pa.Table | None]], n: int, size: int, done: set[int],
         has_id: bool) -> Iterator[tuple[int, pa.Table]]:
    """Re-chunk an ordered stream of ``(rows, table or None)`` into shards ``(k, rows)``, skipping ``done``.

    ``None`` (rows not computed) only ever falls inside shards in ``done``.
    """
    buf: list[tuple[int, pa.Table | None]] = []
    pos = have = 0
    for m, t in items:
        buf.append((m, None if t is None else _renumber(t, pos, has_id)))
        pos, have = pos + m, have + m
        while have >= size or (pos == n and have):
            k, take = (pos - have) // size, min(size, have)
            head, buf = _split(buf, take)
            have -= take
            if k not in done:
                yield k, pa.concat_tables([t for _, t in head])


def stream_local(model: torch.nn.Module, ds: Any, n: int, job: Job, device: torch.device,
                 done: set[int]) -> Iterator[tuple[int, pa.Table]]:
    """Explain the rows in order in this process; batches wholly inside finished shards are not computed."""
    settings, size = job.settings, job.settings.shard_size

    def tables() -> Iterator[tuple[int, pa.Table | None]]:
        pos = 0
        with _ordered(ds):
            for rows in ds.iter_batches(batch_size=job.batch_size, batch_format="numpy"):
                m = len(next(iter(rows.values())))
                if all(k in done for k in range(pos // size, (pos + m - 1) // size + 1)):
                    yield m, None
                else:
                    yield m, explain_batch(model, to_batch_of_rows(rows, pos), settings, device)
                pos += m

    return _cut(tables(), n, size, done, _has_id(ds))


@contextlib.contextmanager
def _ordered(*datasets: Any) -> Iterator[None]:
    """Execute ``datasets`` with ``preserve_order`` (their own execution options, restored on exit)."""
    opts = [ds.context.execution_options for ds in datasets]
    saved = [o.preserve_order for o in opts]
    try:
        for o in opts:
            o.preserve_order = True
        yield
    finally:
        for o, v in zip(opts, saved):
            o.preserve_order = v


def _has_id(ds: Any) -> bool:
    names = ds.schema().names if ds.schema() is not None else []
    return "id" in names


class RowWorker:
    """A Ray actor for Ray Dataset input: builds the model once, explains each batch of rows.

    Args:
        model_source, weights: see :func:`cnn_explain.batch._engines.build_on_worker`.
        job: settings, batch size, the driver's fingerprint.
    """

    def __init__(self, model_source: ModelSource, job: Job, weights: list[Any] | None = None) -> None:
        self.model, self.device = build_on_worker(model_source, weights, job.expected)
        self.settings = job.settings

    def __call__(self, rows: dict[str, np.ndarray]) -> pa.Table:
        """Rows in, explained rows out (positions are set by the driver)."""
        return explain_batch(self.model, to_batch_of_rows(rows, 0), self.settings, self.device)


def stream_ray(model_source: ModelSource, ds: Any, n: int, job: Job, opts: RayOptions,
               done: set[int]) -> Iterator[tuple[int, pa.Table]]:
    """Explain the rows with a pool of :class:`RowWorker` actors, in order; cut the stream into shards."""
    with ray_session(model_source, opts) as rs:
        out = ds.map_batches(RowWorker, batch_size=job.batch_size, batch_format="numpy",
                             compute=rs.ray.data.ActorPoolStrategy(size=rs.workers), num_cpus=1,
                             num_gpus=1 if rs.gpus else 0,
                             fn_constructor_kwargs={"model_source": rs.model_source, "job": job,
                                                    "weights": rs.weights})
        with _ordered(ds, out):
            tables = ((t.num_rows, t) for t in out.iter_batches(batch_size=None, batch_format="pyarrow"))
            yield from _cut(tables, n, job.settings.shard_size, done, _has_id(ds))
