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

import contextlib
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

__all__ = ["ShardTask", "run_local", "run_ray", "explain_shard", "ray_session", "build_on_worker", "RayOptions", "Job"]


@dataclass(frozen=True)
class ShardTask:
    """Shard ``k``: samples ``start … stop - 1``."""

    k: int
    start: int
    stop: int


@dataclass(frozen=True)
class Job:
    """What every batch of a run needs besides the model and the data.

    Attributes:
        settings: the run's settings.
        batch_size: samples per compute batch.
        expected: the driver's model fingerprint (Ray workers check theirs against it), or None.
    """

    settings: RunSettings
    batch_size: int
    expected: str | None = None


def explain_shard(model: torch.nn.Module, source: Source, task: ShardTask, job: Job, device: torch.device) -> pa.Table:
    """One shard's rows, computed ``job.batch_size`` samples at a time."""
    bs = job.batch_size
    tables = [explain_batch(model, source.load(s, min(s + bs, task.stop)), job.settings, device)
              for s in range(task.start, task.stop, bs)]
    return pa.concat_tables(tables)


def run_local(model: torch.nn.Module, source: Source, tasks: list[ShardTask], job: Job,
              device: torch.device) -> Iterator[tuple[int, pa.Table]]:
    """Yield ``(k, rows)`` for each pending shard, in order."""
    for task in tasks:
        yield task.k, explain_shard(model, source, task, job, device)


def _to_ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def build_on_worker(model_source: ModelSource, weights: list[Any] | None,
                    expected: str | None) -> tuple[torch.nn.Module, torch.device]:
    """Build the model in a Ray actor: weights from the object store, checked against the driver's fingerprint.

    Args:
        model_source: how to build the model.
        weights: ``[ObjectRef]`` of a state-dict file's bytes, or None.
        expected: the driver's model fingerprint, or None.

    Raises:
        ValueError: the worker's model differs from the driver's (a factory with random
            weights, another version of the code).
    """
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model_source.build()
    if weights:
        import ray

        state = torch.load(io.BytesIO(ray.get(weights[0])), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        model.load_state_dict(state)
    if expected is not None and fingerprint(model) != expected:
        raise ValueError("model: the factory built different weights on a worker than on the driver "
                         "(random initialisation?); load fixed weights in the factory or pass weights=")
    return model.to(device).eval(), device


class ShardWorker:
    """A Ray actor: builds the model once, then explains whole shards.

    Args:
        model_source: how to build the model.
        source: the data (picklable; files are read by the worker).
        job: settings, batch size, the driver's fingerprint.
        weights: see :func:`build_on_worker`.
    """

    def __init__(self, model_source: ModelSource, source: Source, job: Job, weights: list[Any] | None = None) -> None:
        self.model, self.device = build_on_worker(model_source, weights, job.expected)
        self.source, self.job = source, job

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{"k", "start", "stop"}`` arrays of shard tasks -> ``{"k", "ipc"}`` (Arrow IPC bytes of the rows)."""
        ks, blobs = [], []
        for k, start, stop in zip(batch["k"], batch["start"], batch["stop"]):
            task = ShardTask(int(k), int(start), int(stop))
            table = explain_shard(self.model, self.source, task, self.job, self.device)
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
        workers: number of actors; None: one per CPU (per GPU when the cluster has GPUs).
        address: an existing cluster (``"auto"``, ``"ray://host:10001"``) or None to start a local one.
        runtime_env: Ray ``runtime_env`` for the job; the factory's ``.py`` file is added to ``py_modules``.
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


@dataclass(frozen=True)
class RaySession:
    """What the actors need: the ``ray`` module, the pool size, GPUs, the weights' reference and the model source."""

    ray: Any
    workers: int
    gpus: int
    weights: list[Any] | None
    model_source: ModelSource


@contextlib.contextmanager
def ray_session(model_source: ModelSource, opts: RayOptions) -> Iterator[RaySession]:
    """Connect to (or start) Ray and ship the weights once; put everything back on exit.

    Without a running Ray, one starts (``opts.address`` or a local one) with the
    factory's ``.py`` file in ``runtime_env["py_modules"]`` and stops at the end.
    With Ray already initialised, the caller's ``ray.init(runtime_env=...)`` must
    have shipped the factory's module (Ray ships local files per job only).
    """
    ray = import_ray()
    started = not ray.is_initialized()
    if started:
        ray.init(address=opts.address, num_cpus=opts.num_cpus if opts.address is None else None,
                 runtime_env=_runtime_env(model_source, opts.runtime_env) or None,
                 include_dashboard=False, log_to_driver=False, configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    saved = ctx.enable_progress_bars, ctx.print_on_execution_start
    try:
        ctx.enable_progress_bars, ctx.print_on_execution_start = opts.progress, False
        res = ray.cluster_resources()
        gpus = int(res.get("GPU", 0))
        weights = None
        if model_source.weights is not None:  # read here once; the workers get it through the object store
            with open(model_source.weights, "rb") as f:
                weights = [ray.put(f.read())]
            model_source = ModelSource(spec=model_source.spec, factory=model_source.factory)
        yield RaySession(ray, opts.workers or max(1, gpus or int(res.get("CPU", 1))), gpus, weights, model_source)
    finally:
        ctx.enable_progress_bars, ctx.print_on_execution_start = saved
        if started:
            ray.shutdown()


def run_ray(model_source: ModelSource, source: Source, tasks: list[ShardTask], job: Job,
            opts: RayOptions) -> Iterator[tuple[int, pa.Table]]:
    """Yield ``(k, rows)`` for each pending shard as the actors finish them (any order)."""
    if not tasks:
        return
    with ray_session(model_source, opts) as rs:
        items = [{"k": t.k, "start": t.start, "stop": t.stop} for t in tasks]
        ds = rs.ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            ShardWorker, batch_size=1, compute=rs.ray.data.ActorPoolStrategy(size=min(rs.workers, len(items))),
            num_cpus=1, num_gpus=1 if rs.gpus else 0,
            fn_constructor_kwargs={"model_source": rs.model_source, "source": source, "job": job,
                                   "weights": rs.weights})
        for row in ds.iter_rows():
            yield int(row["k"]), pa.ipc.open_stream(pa.py_buffer(row["ipc"])).read_all()
