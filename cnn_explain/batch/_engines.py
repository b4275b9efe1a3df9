"""The two engines. Both cut the data into the same shards and run :func:`explain_batch` on the same batches.

* local: shards one after the other in this process; memory holds one batch of
  maps plus the shard being assembled, whatever the data-set size.
* Ray: a Ray Data pipeline over the pending shards whose ``map_batches`` stage is
  a pool of actors (:class:`ShardWorker`): each builds the model once in
  ``__init__`` and explains whole shards in ``__call__``; the driver writes and
  records the shards as they stream back (Arrow IPC bytes), so ``out/`` needs no
  shared file system.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from ._compute import explain_batch
from ._settings import ModelSource, RunSettings, fingerprint
from ._source import Source

__all__ = ["ShardTask", "run_local", "run_ray", "explain_shard"]

@dataclass(frozen=True)
class ShardTask:
    """Shard ``k``: samples ``start … stop - 1``."""

    k: int
    start: int
    stop: int

def explain_shard(model: torch.nn.Module, source: Source, task: ShardTask, settings: RunSettings,
                  batch_size: int, device: torch.device) -> pa.Table:
    """One shard's rows, computed ``batch_size`` samples at a time."""
    tables = [explain_batch(model, source.load(s, min(s + batch_size, task.stop)), settings, device)
              for s in range(task.start, task.stop, batch_size)]
    return pa.concat_tables(tables)

def run_local(model: torch.nn.Module, source: Source, tasks: list[ShardTask], settings: RunSettings,
              batch_size: int, device: torch.device) -> Iterator[tuple[ShardTask, pa.Table]]:
    """Yield ``(task, rows)`` for each pending shard, in order."""
    for task in tasks:
        yield task, explain_shard(model, source, task, settings, batch_size, device)

def _to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()

class ShardWorker:
    """A Ray actor: builds the model once, then explains whole shards.

    Args:
        model_source: how to build the model (its weights, if any, come as ``weights``).
        source: the data (picklable; files are read by the worker).
        settings: the run's settings.
        batch_size: samples per compute batch.
        weights: ``[ObjectRef]`` of a state dict's bytes shipped through the object store, or None.
        expected: the driver's model fingerprint; a worker whose model differs (a factory with random
            weights, another version of the code) refuses to run.
    """

    def __init__(self, model_source: ModelSource, source: Source, settings: RunSettings, batch_size: int,
                 weights: list[Any] | None = None, expected: str | None = None) -> None:
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model = model_source.build()
        if weights:
            import ray

            state = torch.load(io.BytesIO(ray.get(weights[0])), map_location="cpu", weights_only=True)
            model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        if expected is not None and fingerprint(model) != expected:
            raise ValueError("model: the factory built different weights on a worker than on the driver "
                             "(random initialisation?); load fixed weights in the factory or pass weights=")
        self.model = model.to(self.device).eval()
        self.source, self.settings, self.batch_size = source, settings, batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{"k", "start", "stop"}`` arrays of shard tasks -> ``{"k", "ipc"}`` (Arrow IPC bytes of the rows)."""
        ks, blobs = [], []
        for k, start, stop in zip(batch["k"], batch["start"], batch["stop"]):
            task = ShardTask(int(k), int(start), int(stop))
            table = explain_shard(self.model, self.source, task, self.settings, self.batch_size, self.device)
            ks.append(task.k)
            blobs.append(_to_ipc(table))
        return {"k": np.asarray(ks, dtype=np.int64), "ipc": np.asarray(blobs, dtype=object)}

def import_ray():
    """``ray`` and ``ray.data``, or an ``ImportError`` saying how to install them."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ImportError("engine='ray' needs Ray Data: pip install 'cnn_explain[ray]' "
                          f"(or pip install 'ray[data]'); {exc}") from exc
    return ray

@dataclass(frozen=True)
class RayOptions:
    """Where and how the actors run.

    Attributes:
        workers: number of actors (``concurrency``); None: one per CPU (per GPU when the cluster has GPUs).
        address: an existing cluster (``"auto"``, ``"ray://host:10001"``) or None to start a local one.
        runtime_env: Ray ``runtime_env`` for the actors; the factory's ``.py`` file is added to ``py_modules``.
        num_cpus: CPUs for a local cluster started here (None: all).
        progress: Ray Data's own progress bars.
    """

    workers: int | None = None
    address: str | None = None
    runtime_env: dict[str, Any] | None = None
    num_cpus: int | None = None
    progress: bool = False

def _runtime_env(model_source: ModelSource, given: dict[str, Any] | None) -> dict[str, Any]:
    env = dict(given or {})
    f = model_source.file
    if f is not None:
        mods = [str(m) for m in env.get("py_modules", [])]
        if str(f) not in mods:
            env["py_modules"] = mods + [str(f)]
    return env


def run_ray(model_source: ModelSource, source: Source, tasks: list[ShardTask], settings: RunSettings,
            batch_size: int, opts: RayOptions, expected: str | None = None) -> Iterator[tuple[ShardTask, pa.Table]]:
    """Yield ``(task, rows)`` for each pending shard as the actors finish them (any order).

    Without a running Ray, one starts (``opts.address`` or a local one) with the
    factory's ``.py`` file in ``runtime_env["py_modules"]`` and stops at the end.
    With Ray already initialised, the caller's ``ray.init(runtime_env=...)`` must
    have shipped the factory's module (Ray ships local files only per job).
    """
    ray = import_ray()
    if not tasks:
        return
    started = not ray.is_initialized()
    if started:  # local files (the factory's module) can be shipped only when the job starts
        ray.init(address=opts.address, num_cpus=opts.num_cpus if opts.address is None else None,
                 runtime_env=_runtime_env(model_source, opts.runtime_env) or None,
                 include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield from _stream(ray, model_source, source, tasks, settings, batch_size, opts, expected,
                           None if started else opts.runtime_env)
    finally:
        if started:
            ray.shutdown()


def _stream(ray: Any, model_source: ModelSource, source: Source, tasks: list[ShardTask], settings: RunSettings,
            batch_size: int, opts: RayOptions, expected: str | None,
            task_env: dict[str, Any] | None) -> Iterator[tuple[ShardTask, pa.Table]]:
    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0))
    workers = opts.workers or max(1, gpus or int(res.get("CPU", 1)))
    weights = None
    if model_source.weights is not None:  # read here once; the workers get it through the object store
        with open(model_source.weights, "rb") as f:
            weights = [ray.put(f.read())]
        model_source = ModelSource(spec=model_source.spec, factory=model_source.factory)
    by_k = {t.k: t for t in tasks}
    items = [{"k": t.k, "start": t.start, "stop": t.stop} for t in tasks]
    ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        ShardWorker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=min(workers, len(items))),
        num_cpus=1, num_gpus=1 if gpus else 0,
        fn_constructor_kwargs={"model_source": model_source, "source": source, "settings": settings,
                               "batch_size": batch_size, "weights": weights,
                               "expected": expected},
        runtime_env=task_env or None)
    ctx = ray.data.DataContext.get_current()
    saved = ctx.enable_progress_bars, ctx.print_on_execution_start
    ctx.enable_progress_bars, ctx.print_on_execution_start = opts.progress, False
    try:
        for row in ds.iter_rows():
            table = pa.ipc.open_stream(pa.py_buffer(row["ipc"])).read_all()
            yield by_k[int(row["k"])], table
    finally:
        ctx.enable_progress_bars, ctx.print_on_execution_start = saved
