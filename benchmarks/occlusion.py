"""Occlusion speed: captum.attr.Occlusion vs cnn_explain exact (incremental) and approx, same run.

Usage: ``python benchmarks/occlusion.py [--quick] [--no-write]``; ``--real``: the look-alikes of
third-party CNNs (``tests/realnets.py`` at 64×64, see `real_table`), printed only; ``--isa avx2``:
every timed process limited to AVX2 (oneDNN, MKL, ATen and FBGEMM's own switches, see `ISA_ENV`) —
what a CPU without AVX-512 or native bfloat16 runs, on a CPU that has them — printed only.

Every timed run happens in its own subprocess (``--worker``); each method runs
``--repeat`` times (default 2) and the fastest run is reported, because a single
run on a shared 2-core machine moved by up to 2× (ResNet-18 exact: 5.9 s, 12.9 s).
The sub-second case (the CIFAR net) runs 5 times, and each of its runs times the
second call in its process, after one untimed call of the same method (see
``CASES``); the first call's time is reported beside ours. Its peak memory is
the resident-set high-water mark ``VmHWM`` of ``/proc/self/status``, reset to the
current RSS just before the run (``/proc/self/clear_refs``; tracemalloc does not
see torch's CPU allocator). Reported peak memory = high-water mark after the run
minus the RSS just before it (model built, input made, one warm-up forward done), in MiB.

Columns: captum time at its best ``perturbations_per_eval`` from {1, 16, 64};
ours exact (``mode="exact"``: incremental inference) and approx
(``mode="approx"``); speedups vs captum; the MAC limit of the exact speedup
(one forward's MACs ÷ the MACs of the regions a window changes, averaged over
positions, from :meth:`IncrementalOcclusion.macs`); max |ours − captum| ÷ max
|captum|, and captum's own noise (the same quantity between two of its
``perturbations_per_eval`` settings: float32 results depend on batch size);
max |ours − float64| and the worst max |captum − float64| ÷ max |float64 map|
against a float64 captum run (the ground truth: float32 results of either tool
differ from it by accumulation-order rounding); the float32 floor, the rounding
of the clean image's target probability itself (|p32 − p64| in the same unit:
a float32 map cannot be expected to be closer); Pearson correlation of approx
with exact.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _perfdoc import Row, write_section

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

# warmup: untimed calls of the same method, in the same process, before the timed one. Only for the
# sub-second case: there a fresh process's first call carries ~45 ms of one-time costs (oneDNN kernel
# creation for every new conv shape, first touch of fresh memory) on a 70-300 ms job; on the
# multi-second cases they are < 2 % and every timed call is a process's first.
CASES = {
    "cifar10_cnn": dict(size=32, window=4, stride=2, warmup=1, repeat=5),  # 0.5 s per run: more runs, less noise
    "vgg11": dict(size=128, window=8, stride=4, warmup=0),
    "resnet18": dict(size=128, window=8, stride=4, warmup=0),
}
QUICK = {"cifar10_cnn": 32, "vgg11": 64, "resnet18": 64}
# Environment of the timed processes per ``--isa``: the libraries' documented instruction-set limits.
ISA_ENV = {
    "native": {},
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
             "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"},
}
_isa = "native"


def build(name: str, size: int):
    from models import resnet18, seeded, vgg11

    from cnn_explain.models import cifar10_cnn

    if name == "cifar10_cnn":
        return seeded(cifar10_cnn(), probe_size=32)
    if name == "vgg11":
        return vgg11(image_size=size)
    return resnet18()


def worker(spec: dict) -> dict:
    """One timed run (in a fresh process); writes the map to spec['out']."""
    from captum.attr import Occlusion

    from cnn_explain.attribution import occlusion

    model = build(spec["model"], spec["size"])
    x = torch.rand(1, 3, spec["size"], spec["size"], generator=torch.Generator().manual_seed(0))
    if spec["method"] == "captum_f64":  # the float64 reference both float32 maps are measured against
        model, x = model.double(), x.double()
    with torch.inference_mode():
        target = int(model(x).argmax())
    w, s = spec["window"], spec["stride"]

    def call():
        if spec["method"].startswith("captum"):
            with torch.inference_mode():
                f = lambda z: torch.softmax(model(z), 1)  # noqa: E731
                a = Occlusion(f).attribute(x, sliding_window_shapes=(3, w, w), strides=(3, s, s), target=target,
                                           baselines=0.0, perturbations_per_eval=spec["ppe"])
            return a, {}
        # approx32: approximate mode in float32, what a CPU without native bfloat16 runs
        precision = "float32" if spec["method"] == "approx32" else "auto"
        mode = "approx" if spec["method"] == "approx32" else spec["method"]
        r = occlusion(model, x, target=target, window=w, stride=s, mode=mode, progress=False,
                      approx_precision=precision)
        return r.attribution, {"engine": r.engine, "batch": r.batch_size, **dict(r.extra)}

    first = None
    for i in range(spec.get("warmup", 0)):  # untimed: first-use kernel creation and memory first-touch
        t0 = time.perf_counter()
        call()
        if i == 0:
            first = time.perf_counter() - t0
    rss0 = _reset_peak()
    t0 = time.perf_counter()
    a, info = call()
    elapsed = time.perf_counter() - t0
    rss1 = _vm("VmHWM")
    torch.save(a.detach().cpu(), spec["out"])
    return {"time": elapsed, "first": elapsed if first is None else first, "peak_mib": (rss1 - rss0) / 1024, **info}


def _vm(key: str) -> int:
    """A ``/proc/self/status`` field in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def _reset_peak() -> int:
    """Reset the resident-set high-water mark (VmHWM) to the current RSS; returns it in KiB.

    ``ru_maxrss`` cannot be used: Linux carries it across fork + exec, so the
    parent's larger mark hid the worker's growth (ResNet captum at ppe 1 read 0 MiB).
    """
    Path("/proc/self/clear_refs").write_text("5")
    return _vm("VmRSS")


def _run(spec: dict) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    env = {**os.environ, **ISA_ENV[_isa]}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def mac_limit(name: str, size: int, window: int, stride: int) -> float:
    from cnn_explain.attribution.occlude.windows import make_grid
    from cnn_explain.attribution.occlude.incremental import IncrementalOcclusion

    model = build(name, size)
    g = make_grid((size, size), (window, window), (stride, stride))
    with torch.inference_mode():
        eng = IncrementalOcclusion(model, torch.rand(1, 3, size, size), *g.positions())
        m = eng.macs()
    return m["full"] / m["needed"]


def score_rounding(name: str, size: int) -> float:
    """|float32 − float64| of the clean image's target probability: a float32 map cannot be closer to the truth."""
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        p32 = torch.softmax(build(name, size)(x), 1)
        target = int(p32.argmax())
        p64 = torch.softmax(build(name, size).double()(x.double()), 1)
    return abs(float(p32[0, target]) - float(p64[0, target]))


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.reshape(-1).double(), b.reshape(-1).double()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def bench_case(name: str, size: int, window: int, stride: int, ppes, tmp: Path, repeat: int = 1,
               warmup: int = 0) -> dict:
    res, maps = {}, {}
    runs = [("captum", p) for p in ppes] + [("exact", None), ("approx", None), ("approx32", None),
                                            ("captum_f64", 64)]
    for method, ppe in runs:
        key = f"captum{ppe}" if method == "captum" else method
        spec = dict(model=name, size=size, window=window, stride=stride, method=method, ppe=ppe,
                    out=str(tmp / f"{name}_{key}.pt"), warmup=0 if method == "captum_f64" else warmup)
        runs_ = [_run(spec) for _ in range(1 if method == "captum_f64" else repeat)]
        res[key] = min(runs_, key=lambda r: r["time"])
        res[key]["peak_mib"] = max(r["peak_mib"] for r in runs_)
        maps[key] = torch.load(spec["out"])
        res[key]["first"] = min(r["first"] for r in runs_)
        times = ", ".join(f"{r['time']:.2f}" for r in runs_)
        if spec["warmup"]:
            times += " (first calls " + ", ".join(f"{r['first']:.2f}" for r in runs_) + ")"
        print(f"  {name} {key}: {times} s, peak {res[key]['peak_mib']:.0f} MiB", flush=True)
    captums = [k for k in res if k.startswith("captum") and k != "captum_f64"]
    best = min(captums, key=lambda k: res[k]["time"])
    cap, truth = maps[best], maps["captum_f64"]
    others = [k for k in captums if k != best]
    scale64 = float(truth.abs().max())
    scale = float(cap.abs().max())
    positions = (-(-(size - window) // stride) + 1) ** 2
    return {
        "model": name, "input": f"3×{size}×{size}", "window": f"{window}/{stride}", "positions": positions,
        "captum": res[best]["time"], "ppe": int(best[6:]), "exact": res["exact"]["time"],
        "approx": res["approx"]["time"], "approx32": res["approx32"]["time"],
        "pearson32": _pearson(maps["approx32"], maps["exact"]), "limit": mac_limit(name, size, window, stride),
        "exact_first": res["exact"]["first"], "warmup": warmup,
        "diff": float((maps["exact"] - cap).abs().max()) / scale,
        "noise": max((float((maps[k] - cap).abs().max()) / scale for k in others), default=float("nan")),
        "err64_exact": float((maps["exact"].double() - truth).abs().max()) / scale64,
        "floor": score_rounding(name, size) / scale64,
        "err64_captum": max(float((maps[k].double() - truth).abs().max()) / scale64 for k in captums),
        "precision": res["approx"].get("precision"),
        "pearson": _pearson(maps["approx"], maps["exact"]),
        "mem_captum": res[best]["peak_mib"], "mem_exact": res["exact"]["peak_mib"],
        "engine": res["exact"].get("engine"),
    }


def table(rows: list[dict]) -> str:
    head = ("| model | input | window/stride | positions | captum s (best ppe) | exact s | approx s | "
            "exact × | approx × | MAC limit × | exact % of limit | max Δ vs captum / max | captum ppe noise | "
            "max Δ vs float64: exact / captum (worst ppe) | float32 floor | approx Pearson | peak MiB captum / exact |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        sx, sa = r["captum"] / r["exact"], r["captum"] / r["approx"]
        first = f" (first call {r['exact_first']:.2f})" if r["warmup"] else ""
        lines.append(
            f"| {r['model']} | {r['input']} | {r['window']} | {r['positions']} | {r['captum']:.2f} ({r['ppe']}) | "
            f"{r['exact']:.2f}{first} | {r['approx']:.2f} | {sx:.2f} | {sa:.2f} | {r['limit']:.2f} | "
            f"{100 * sx / r['limit']:.0f}% | {r['diff']:.1e} | {r['noise']:.1e} | "
            f"{r['err64_exact']:.1e} / {r['err64_captum']:.1e} | {r['floor']:.1e} | {r['pearson']:.3f} | "
            f"{r['mem_captum']:.0f} / {r['mem_exact']:.0f} |")
    return "\n".join(lines)


REAL_NAMES = ("efficientnet", "convnext", "densenet", "resnet_tv", "dataclass_out", "control_flow")


def _best_times(calls: dict, repeat: int) -> dict:
    """Fastest of ``repeat`` warm runs of every call, the calls interleaved (load on a shared machine moves
    single runs by up to 3×: interleaving spreads it over all of them)."""
    for call in calls.values():
        call()  # untimed: kernel creation and first touch
    times: dict = {k: [] for k in calls}
    for _ in range(repeat):
        for key, call in calls.items():
            t0 = time.perf_counter()
            call()
            times[key].append(time.perf_counter() - t0)
    return {k: min(v) for k, v in times.items()}


def bench_real(name: str, window: int = 8, stride: int = 4, repeat: int = 15) -> dict:
    """captum (best of ppe 16 / 64) against ours exact / batched / incremental on one look-alike, warm, in-process,
    the fastest of ``repeat`` interleaved runs."""
    import warnings

    from captum.attr import Occlusion
    from models import REAL_SIZE, real_net_64

    from cnn_explain.attribution import occlusion
    from cnn_explain.attribution.occlude.incremental import IncrementalOcclusion, Unsupported
    from cnn_explain.attribution.occlude.windows import make_grid
    from cnn_explain.hooks import select_output

    model = real_net_64(name)
    x = torch.rand(1, 3, REAL_SIZE, REAL_SIZE, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        target = int(select_output(model(x)).argmax())
    row: dict = {"model": name}

    def captum(ppe: int):
        with torch.inference_mode():
            return Occlusion(lambda z: torch.softmax(select_output(model(z)), 1)).attribute(
                x, sliding_window_shapes=(3, window, window), strides=(3, stride, stride), target=target,
                baselines=0.0, perturbations_per_eval=ppe)

    def ours(mode: str):
        return occlusion(model, x, target=target, window=window, stride=stride, mode=mode, progress=False)

    calls = {f"captum{p}": (lambda p=p: captum(p)) for p in (16, 64)}
    calls.update({m: (lambda m=m: ours(m)) for m in ("exact", "batched", "incremental")})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        row.update(_best_times(calls, repeat))
        for mode in ("exact", "batched", "incremental"):
            r = ours(mode)
            row[f"{mode}_engine"], row[f"{mode}_reason"] = r.engine, r.engine_reason
    try:
        g = make_grid((REAL_SIZE, REAL_SIZE), (window, window), (stride, stride))
        with torch.inference_mode():
            m = IncrementalOcclusion(model, x, *g.positions()).macs()
        row["limit"] = m["full"] / m["needed"]
    except Unsupported:
        row["limit"] = float("nan")
    return row


def real_table(rows: list[dict]) -> str:
    head = ("| model | captum s (best ppe) | exact s | engine | batched s | incremental s | exact ÷ captum | "
            "exact ÷ batched | MAC limit × | why |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        ppe = min((16, 64), key=lambda p: r[f"captum{p}"])
        cap = r[f"captum{ppe}"]
        lines.append(f"| {r['model']} | {cap:.3f} ({ppe}) | {r['exact']:.3f} | {r['exact_engine']} | "
                     f"{r['batched']:.3f} | {r['incremental']:.3f} | {r['exact'] / cap:.2f} | "
                     f"{r['exact'] / r['batched']:.2f} | {r['limit']:.2f} | {r['exact_reason']} |")
    return "\n".join(lines)


def rows(quick: bool) -> list[Row]:
    """The summary-table rows: exact (and approx) occlusion against captum at ``perturbations_per_eval=64``.

    Quick: the CIFAR net only. Full: the three cases. Captum at ppe 64 (its best on these nets in every run
    of ``main``, which also tries 1 and 16), one fresh-process run each: ``main`` is the detailed benchmark.
    """
    names = ["cifar10_cnn"] if quick else list(CASES)
    out: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            c = CASES[name]
            size = QUICK[name] if quick else c["size"]
            r = bench_case(name, size, c["window"], c["stride"], (64,), Path(tmp), 1, c["warmup"])
            work = f"occlusion, {name} {r['input']}, window/stride {r['window']}"
            alt = f"captum `Occlusion`, perturbations_per_eval={r['ppe']}"
            out.append(Row(f"{work}, exact", alt, r["captum"], f"`occlusion(mode='exact')` ({r['engine']})",
                           r["exact"], f"max Δ {r['diff']:.1e} of the map's max; vs float64: ours "
                           f"{r['err64_exact']:.1e}, captum {r['err64_captum']:.1e}", r["mem_exact"]))
            if name != "cifar10_cnn":
                out.append(Row(f"{work}, approximate", alt, r["captum"],
                               f"`occlusion(mode='approx')` ({r['precision']})", r["approx"],
                               f"Pearson {r['pearson']:.3f} to exact"))
                out.append(Row(f"{work}, approximate in float32 (a CPU without native bfloat16)", alt, r["captum"],
                               "`occlusion(mode='approx', approx_precision='float32')`", r["approx32"],
                               f"Pearson {r['pearson32']:.3f} to exact"))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller inputs (VGG/ResNet at 64×64), ppe 16 and 64 only")
    p.add_argument("--no-write", action="store_true", help="do not update docs/performance.md")
    p.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    p.add_argument("--repeat", type=int, default=2,
                   help="fresh-process runs per method; the fastest is reported (the float64 reference runs once)")
    p.add_argument("--real", action="store_true",
                   help="the look-alikes of third-party CNNs at 64×64 (window 8, stride 4), printed only")
    p.add_argument("--isa", choices=list(ISA_ENV), default="native",
                   help="limit the timed processes to this instruction set (avx2: printed only, not written)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    global _isa
    _isa = args.isa
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if args.real:
        print(real_table([bench_real(name, repeat=max(args.repeat, 15)) for name in REAL_NAMES]))
        return 0
    ppes = (16, 64) if args.quick else (1, 16, 64)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases:
            c = CASES[name]
            size = QUICK[name] if args.quick else c["size"]
            repeat = max(args.repeat, c.get("repeat", 1))
            rows.append(bench_case(name, size, c["window"], c["stride"], ppes, Path(tmp), repeat, c["warmup"]))
    text = table(rows)
    warm = [n for n in args.cases if CASES[n]["warmup"]]
    more = "".join(f", {n}: {max(args.repeat, CASES[n].get('repeat', 1))}" for n in args.cases
                   if CASES[n].get("repeat", 1) > args.repeat)
    note = (f"\n\nMeasured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPU cores shared with other jobs "
            f"(torch {torch.__version__}, {'--quick' if args.quick else 'full'} run); each time is the fastest of "
            f"{args.repeat} runs{f' ({more[2:]})' if more else ''}, each in a fresh process"
            + (f" ({', '.join(warm)}: the second call in that process, after one untimed call of the same method; "
               "our first call in parentheses)" if warm else "")
            + "; peak memory = the largest VmHWM growth during a run. Ratios are what matters.")
    context = HERE / "occlusion_context.md"  # hand-written reading of the runs, kept across re-runs
    if context.exists():
        note += "\n\n" + context.read_text().strip()
    print(text)
    if args.isa != "native":
        print(f"\nEvery timed process ran with {ISA_ENV[args.isa]}; not written to docs/performance.md.")
    elif not args.no_write:
        write_section("occlusion", "Occlusion", text + note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
