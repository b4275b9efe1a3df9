"""``explain_dataset``: explain every image of a data set into resumable Parquet shards.

Example:
    >>> from cnn_explain.batch import explain_dataset, read_results        # doctest: +SKIP
    >>> run = explain_dataset("mymodel.py:build", "photos/", out="results/",
    ...                       methods=("grad_cam", "saliency"), engine="ray", workers=2)  # doctest: +SKIP
    >>> read_results(run.out).groupby("label").prob.mean()                # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch

from .._utils import check_device, positive_int, progress_bar
from ..roles import first_conv_module as first_conv
from ..images import size_hw
from ._compute import explain_batch, thumb_hw
from ._engines import Job, RayOptions, ShardTask, import_ray, run_local, run_ray
from ._raydata import is_ray_dataset, stream_local, stream_ray, to_batch_of_rows
from ._settings import Engine, ModelSource, RunSettings, check_target, fingerprint, parse_methods, stable_repr
from ._source import Batch, Source, make_source
from ._store import FORMAT, Store

__all__ = ["explain_dataset", "DatasetRun"]


@dataclass(frozen=True)
class DatasetRun:
    """What a run did.

    Attributes:
        out: the output folder (``manifest.json`` and ``shard-*.parquet``).
        rows: rows in the finished run (= samples).
        seconds: wall time of this call.
        shards: shards in the run.
        computed: shards computed by this call (the others were kept from an earlier run).
        engine: the engine used.
    """

    out: Path
    rows: int
    seconds: float
    shards: int
    computed: int
    engine: Engine


def _settings(methods: Any, method_options: dict[str, Any], *, target: Any, map_size: Any, map_dtype: Any,
              deletion_steps: Any, shard_size: Any, thumbnail: Any) -> RunSettings:
    if map_dtype not in ("float16", "float32"):
        raise ValueError(f"map_dtype must be 'float16' or 'float32', got {map_dtype!r}")
    return RunSettings(parse_methods(methods, method_options), check_target(target), size_hw(map_size, "map_size"),
                       map_dtype, positive_int(deletion_steps, "deletion_steps", minimum=0),
                       positive_int(shard_size, "shard_size"), positive_int(thumbnail, "thumbnail", minimum=0))


@dataclass(frozen=True)
class _Input:
    """The data, checked: a :class:`Source` (by position) or a Ray Dataset (a stream), and its first sample."""

    n: int
    probe: Batch
    source: Source | None = None
    stream: Any = None
    ids_sha256: str | None = None
    classes: list[str] | None = None
    transform: str | None = None


def _input(data: Any, net: torch.nn.Module, transform: Any, image_size: Any) -> _Input:
    if is_ray_dataset(data):
        n = data.count()
        if n == 0:
            raise ValueError("data is an empty Ray Dataset")
        return _Input(n, to_batch_of_rows(data.take_batch(1, batch_format="numpy"), 0), stream=data)
    conv = first_conv(net)
    mode = "L" if conv is not None and conv.in_channels == 1 else "RGB"
    source = make_source(data, transform=transform, mode=mode, size=size_hw(image_size, "image_size"))
    ids = hashlib.sha256("\n".join(source.ids).encode()).hexdigest()
    t = getattr(source, "transform", None)
    return _Input(len(source), source.load(0, 1), source, None, ids, source.classes,
                  None if t is None else stable_repr(t))


def _header(settings: RunSettings, data: _Input, model: torch.nn.Module, msrc: ModelSource) -> dict[str, Any]:
    x = data.probe.x[0]
    hw = tuple(x.shape[-2:])
    info = {"samples": data.n, "ids_sha256": data.ids_sha256, "classes": data.classes, "input_chw": list(x.shape),
            "shard_size": settings.shard_size, "map_hw": list(settings.map_size or hw), "transform": data.transform}
    if settings.thumbnail:
        info["thumbnail_hwc"] = [*thumb_hw(hw, settings.thumbnail), int(x.shape[0])]
    return {"format": FORMAT, "settings": settings.to_json(),
            "model": {"source": msrc.describe(), "fingerprint": fingerprint(model)}, "data": info}


def _results(engine: Engine, data: _Input, net: torch.nn.Module, msrc: ModelSource, job: Job, *,
             opts: RayOptions, done: set[int]) -> Iterator[tuple[int, pa.Table]]:
    """``(k, rows)`` of every shard not in ``done``, from the engine that fits the engine and the input."""
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    if data.stream is not None:
        if engine is Engine.LOCAL:
            return stream_local(net, data.stream, data.n, job, device, done)
        return stream_ray(msrc, data.stream, data.n, job, opts, done)
    size = job.settings.shard_size
    tasks = [ShardTask(k, s, min(s + size, data.n)) for k, s in enumerate(range(0, data.n, size)) if k not in done]
    if engine is Engine.LOCAL:
        return run_local(net, data.source, tasks, job, device)
    return run_ray(msrc, data.source, tasks, job, opts)


def explain_dataset(model: Any, data: Any, *, methods: Any = ("grad_cam", "saliency"), out: str | os.PathLike,
                    engine: str = "local", workers: int | None = None, batch_size: int = 64, resume: bool = True,
                    target: Any = None, progress: bool = True, transform: Any = None, image_size: Any = None,
                    weights: str | os.PathLike | None = None, map_size: Any = None, map_dtype: str = "float16",
                    deletion_steps: int = 0, shard_size: int = 256, thumbnail: int = 32,
                    address: str | None = None, runtime_env: dict[str, Any] | None = None,
                    num_cpus: int | None = None, device: str | torch.device | None = None,
                    **method_options: Any) -> DatasetRun:
    """Explain every sample of ``data`` with each method; write one Parquet row per sample under ``out``.

    Args:
        model: ``"pkg.module:factory"`` / ``"file.py:factory"`` / ``"digits"`` (the trained digits CNN), a
            zero-argument callable returning an ``nn.Module``, or (``engine="local"`` only) an ``nn.Module``.
        data: a folder with one subfolder per class, a list of image paths, or a torch ``Dataset``
            (items ``x``, ``(x, y)``, ``(x, y, mask_or_box)`` or dicts with ``image``/``label``/``mask``/``box``).
        methods: names (``grad_cam``, ``guided_grad_cam``, ``saliency``/``gradient``, ``guided``, ``deconv``,
            ``occlusion``), a comma-separated string, or ``{name: options}``.
        out: the output folder.
        engine: ``"local"`` (this process) or ``"ray"`` (a pool of Ray actors).
        workers: Ray actors (None: one per CPU, or per GPU when the cluster has GPUs).
        batch_size: samples per compute batch (does not change the rows).
        resume: keep the verified shards of an earlier run of the same settings in ``out``.
        target: None (predicted class), ``"label"`` or a class index.
        progress: a progress bar over shards.
        transform: ``raw image -> (C, H, W)`` for files (and non-tensor data-set items).
        image_size: resize files read without a transform (int or ``(H, W)``).
        weights: a state-dict file loaded into the built model (``weights_only=True``).
        map_size: ``(H, W)`` of the stored maps (default: the input's).
        map_dtype: ``"float16"`` or ``"float32"``.
        deletion_steps: > 0 adds each method's deletion and insertion AUC with that many steps.
        shard_size: rows per shard, the unit of resuming.
        thumbnail: longest side of the stored input thumbnails (0: none).
        address, runtime_env, num_cpus: Ray cluster address, extra ``runtime_env``, CPUs of a local cluster.
        device: where ``engine="local"`` runs a model it builds (default: CUDA when available, else the CPU;
            Ray workers always take CUDA when they have it); an ``nn.Module`` stays where it is.
        **method_options: per-method options, e.g. ``grad_cam={"layer": "conv2"}``.

    Returns:
        `DatasetRun`.

    Raises:
        ValueError / TypeError: bad arguments, data without samples, a model that fails to build
            or to run on the first sample, an ``out`` holding a different run — all before any shard is computed.
        ImportError: ``engine="ray"`` without Ray installed.
    """
    t0 = time.perf_counter()
    try:
        eng = Engine(engine)
    except ValueError:
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}") from None
    settings = _settings(methods, method_options, target=target, map_size=map_size, map_dtype=map_dtype,
                         deletion_steps=deletion_steps, shard_size=shard_size, thumbnail=thumbnail)
    batch_size = positive_int(batch_size, "batch_size")
    if workers is not None:
        workers = positive_int(workers, "workers")
        if eng is Engine.LOCAL:
            raise ValueError("workers= is for engine='ray'; engine='local' runs in this process")
    if not isinstance(resume, bool):
        raise TypeError(f"resume must be True or False, got {type(resume).__name__}")
    if device is not None:
        device = check_device(device)
    msrc = ModelSource.of(model, weights)
    if eng is Engine.RAY:
        import_ray()
        if msrc.module is not None:
            raise TypeError("engine='ray' builds the model on each worker: give model as 'module:factory', "
                            "'file.py:factory' or a zero-argument callable, not an nn.Module")
    net = msrc.build()
    if msrc.module is None:
        net = net.to(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
    elif device is not None:
        raise ValueError("device= places a model built from a factory; an nn.Module is used where it is")
    inp = _input(data, net, transform, image_size)
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    explain_batch(net, inp.probe, settings, device)  # a bad method option or model fails here, before any shard
    header = _header(settings, inp, net, msrc)
    store = Store(out, header, resume)
    size, n_shards = settings.shard_size, -(-inp.n // settings.shard_size)
    pending = n_shards - len(store.done)
    job = Job(settings, batch_size, header["model"]["fingerprint"])
    results = _results(eng, inp, net, msrc, job, opts=RayOptions(workers, address, runtime_env, num_cpus),
                       done=set(store.done))
    for k, table in progress_bar(results, enabled=progress, total=pending, desc="shards", unit="shard"):
        if table.num_rows != min(size, inp.n - k * size):
            raise RuntimeError(f"shard {k} came back with {table.num_rows} rows, expected {min(size, inp.n - k * size)}")
        store.write(k, k * size, table)
    seconds = time.perf_counter() - t0
    return DatasetRun(Path(out), store.finish(seconds, n_shards), seconds, n_shards, pending, eng)
