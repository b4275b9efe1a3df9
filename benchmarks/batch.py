"""Data-set runs: images per second of ``explain_dataset`` (local, Ray with 1 and 2 workers) against a
plain loop, and the local engine's peak memory as the data set grows.

* Throughput, Grad-CAM only: 2,000 digits (28×28, seed 001's CNN, in memory) and
  512 photos (128×128 crops of the bundled sample photos written as PNG files,
  a small VGG). The plain loop calls ``ex.grad_cam`` per batch of 64 and keeps
  nothing; the engines also give each image's prediction and probability
  (from Grad-CAM's forward pass) and write float16 maps, thumbnails and the manifest,
  in shards of 64 rows (the unit a Ray worker takes).
  Ray starts once (its start-up is reported apart); each Ray run includes
  building its actors.
* Memory: in a fresh process, the rise of peak RSS while the local engine
  explains 2,000 or 20,000 digits (a flat rise means bounded memory); the
  larger of two runs, since the allocator makes single runs vary by ~20 MiB.

Everything in this process runs with one thread; each Ray worker has one CPU.

    python benchmarks/batch.py            # full (about 2-3 minutes on 2 cores); updates docs/performance.md
    python benchmarks/batch.py --quick    # a smoke run, doc not updated
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARD = 64  # rows per shard in the throughput runs: 8+ shards per case, so that two workers share the work
sys.path.insert(0, str(ROOT))


# --------------------------------------------------------------------------- models and data (also imported by Ray workers)
def digits_model():
    """Seed 001's CNN with seeded weights (every worker builds the same model)."""
    from cnn_explain.models import mnist_cnn

    torch.manual_seed(0)
    return mnist_cnn()


def photo_model():
    """A small VGG (width 16) with seeded weights, for 128×128 RGB photos."""
    from cnn_explain.models import tiny_vgg

    torch.manual_seed(0)
    return tiny_vgg(width=16)


class Digits(torch.utils.data.Dataset):
    """``n`` digits, cycling through scikit-learn's 1,797 (the same images whatever ``n``)."""

    def __init__(self, n: int) -> None:
        from cnn_explain.data import load_digits

        self.x, self.y = load_digits("all").tensors
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.x[i % len(self.y)], self.y[i % len(self.y)]


def photo_folder(root: Path, n: int, size: int) -> Path:
    """``n`` random ``size×size`` crops of the sample photos as PNGs in ``root/<photo name>/``."""
    import numpy as np
    from PIL import Image

    from cnn_explain.data import sample_image

    g = np.random.default_rng(0)
    names = ("china", "flower", "grace_hopper")
    photos = {name: (sample_image(name).permute(1, 2, 0).numpy() * 255).astype(np.uint8) for name in names}
    for i in range(n):
        name = names[i % 3]
        im = photos[name]
        y, x = g.integers(0, im.shape[0] - 2 * size), g.integers(0, im.shape[1] - 2 * size)
        (root / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(im[y:y + 2 * size, x:x + 2 * size]).resize((size, size)).save(root / name / f"{i:05d}.png")
    return root


# --------------------------------------------------------------------------- throughput
def plain_loop(model, data, batch_size: int = 64) -> None:
    """What one writes by hand: batches through ``ex.grad_cam``, nothing kept."""
    from cnn_explain import explain

    ex = explain(model)
    for s in range(0, len(data), batch_size):
        x = torch.stack([data[i][0] for i in range(s, min(s + batch_size, len(data)))])
        ex.grad_cam(x)


def throughput(case: str, spec: str, data, plain, out: Path, ray_workers: tuple[int, ...]) -> list[dict]:
    """Images per second of the plain loop (over ``plain``), the local engine and Ray with each worker count."""
    from cnn_explain.batch import explain_dataset
    from cnn_explain.batch._settings import ModelSource

    rows = []
    t = time.perf_counter()
    plain_loop(ModelSource(spec=spec).build(), plain)
    rows.append({"case": case, "how": "plain loop (`ex.grad_cam` per batch)", "s": time.perf_counter() - t})
    runs = [("local", None)] + [("ray", w) for w in ray_workers]
    for engine, w in runs:
        t = time.perf_counter()
        explain_dataset(spec, data, methods=("grad_cam",), out=out / f"{case}-{engine}-{w}", engine=engine,
                        workers=w, resume=False, progress=False, shard_size=SHARD)
        how = "`engine=\"local\"`" if engine == "local" else f"`engine=\"ray\"`, {w} worker{'s' if w > 1 else ''}"
        rows.append({"case": case, "how": how, "s": time.perf_counter() - t})
    for r in rows:
        r["ips"] = len(plain) / r["s"]
        print(f"{case:>22}  {r['how']:<42} {r['s']:7.2f} s  {r['ips']:8.1f} images/s", flush=True)
    return rows


# --------------------------------------------------------------------------- memory
_MEMORY = """
import sys, torch
sys.path.insert(0, {root!r}); sys.path.insert(0, {bench!r})
torch.set_num_threads(1)
from batch import Digits, digits_model
from cnn_explain.batch import explain_dataset
def vm(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
kw = dict(methods=("grad_cam",), progress=False, resume=False)
explain_dataset(digits_model, Digits(512), out={out!r} + "-warm", **kw)
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
before = vm("VmRSS")
explain_dataset(digits_model, Digits({n}), out={out!r}, **kw)
print(vm("VmHWM") - before)
"""


def peak_rise(n: int, out: Path) -> float:
    """MiB by which peak RSS rises while the local engine explains ``n`` digits (fresh process)."""
    code = _MEMORY.format(root=str(ROOT), bench=str(ROOT / "benchmarks"), out=str(out / f"mem{n}"), n=n)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    if res.returncode:
        raise RuntimeError(f"the memory run for {n} images failed:\n{res.stderr[-2000:]}")
    return float(res.stdout.split()[-1])


def rows(quick: bool) -> list:
    """The summary-table rows: the local engine against a plain loop calling ``ex.grad_cam`` per batch.

    (Ray's figures stay in the data-set section: starting a cluster is not a per-capability comparison.)
    """
    from _perfdoc import Row

    torch.set_num_threads(1)
    here = str(Path(__file__).resolve())
    n_digits = 200 if quick else 2000
    out: list = []
    with tempfile.TemporaryDirectory() as tmp:
        cases = [(f"{n_digits:,} digits 28×28", f"{here}:digits_model", Digits(n_digits), Digits(n_digits))]
        if not quick:
            from cnn_explain.data import ImageFolder

            photos = photo_folder(Path(tmp) / "photos", 512, 128)
            cases.append(("512 photos 128×128", f"{here}:photo_model", str(photos), ImageFolder(photos)))
        for case, spec, data, plain in cases:
            got = throughput(case, spec, data, plain, Path(tmp), ())
            out.append(Row(f"Grad-CAM of every image, {case}, Parquet shards", got[0]["how"], got[0]["s"],
                           "`explain_dataset(engine=\"local\")`", got[1]["s"],
                           "the same Grad-CAM maps, plus predictions and float16 maps written"))
    return out


# --------------------------------------------------------------------------- report
def table(rows: list[dict], ray_start: float | None, mem: dict[int, float]) -> str:
    lines = ["| data (Grad-CAM, shards of 64 rows) | how | seconds | images/s |", "|---|---|---:|---:|"]
    lines += [f"| {r['case']} | {r['how']} | {r['s']:.2f} | {r['ips']:.0f} |" for r in rows]
    text = "\n".join(lines)
    if ray_start is not None:
        text += f"\n\nStarting the local Ray (2 CPUs) took {ray_start:.1f} s, not counted above."
    text += ("\n\nPeak memory of `engine=\"local\"` (rise of peak RSS in a fresh process, larger of two runs, "
             "Grad-CAM, default shards of 256 rows): " + ", ".join(f"{n:,} digits: {v:.1f} MiB" for n, v in mem.items()) + ".")
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, Ray with 2 workers only, doc not updated")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    n_digits, n_photos, size = (200, 32, 64) if args.quick else (2000, 512, 128)
    mem_sizes = (200, 2000) if args.quick else (2000, 20000)
    ray_workers: tuple[int, ...] = (2,) if args.quick else (1, 2)
    here = str(Path(__file__).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        ray_start = None
        try:
            import ray
        except ImportError:
            ray_workers = ()
        else:
            t = time.perf_counter()
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"py_modules": [here]})
            ray_start = time.perf_counter() - t
        try:
            from cnn_explain.data import ImageFolder

            photos = photo_folder(out / "photos", n_photos, size)
            rows = throughput(f"{n_digits:,} digits 28×28", f"{here}:digits_model", Digits(n_digits),
                              Digits(n_digits), out, ray_workers)
            rows += throughput(f"{n_photos} photos {size}×{size}", f"{here}:photo_model", str(photos),
                               ImageFolder(photos), out, ray_workers)
        finally:
            if ray_start is not None:
                ray.shutdown()
        mem = {n: max(peak_rise(n, out) for _ in range(2)) for n in mem_sizes}  # the allocator makes it noisy
    print(mem)
    if not args.quick:
        from _perfdoc import write_section

        write_section("batch", "Data-set runs (batch)", table(rows, ray_start, mem))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
