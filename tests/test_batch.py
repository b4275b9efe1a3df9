"""explain_dataset: rows against per-image references, invariance to batch size / engine / workers,
resuming after a kill or a corrupt shard, clear errors before any work, flat memory, summaries."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset, Subset

from cnn_explain.attribution import deletion_insertion, grad_cam
from cnn_explain.batch import explain_dataset, read_results, summarize_dataset
from cnn_explain.data import load_digits

ROOT = Path(__file__).resolve().parents[1]

FACTORY = '''
import time

import torch
from torch.utils.data import Dataset

from cnn_explain.models import mnist_cnn


def build():
    torch.manual_seed(0)
    return mnist_cnn()


def build_other():
    torch.manual_seed(1)
    return mnist_cnn()


def tiny():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                               torch.nn.Conv2d(4, 6, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(6, 10))


def broken():
    raise RuntimeError("no weights here")


def unseeded():
    return mnist_cnn()


class SlowDigits(Dataset):
    """The first n test digits, each read after a pause (so that a kill lands mid-run)."""

    def __init__(self, n, delay):
        from cnn_explain.data import load_digits

        self.x, self.y = load_digits("test").tensors
        self.n, self.delay = n, delay

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        time.sleep(self.delay)
        return self.x[i], self.y[i]


class Noise(Dataset):
    """n random 28x28 images, image i drawn from a generator seeded with i."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return torch.rand(1, 28, 28, generator=g), i % 10
'''


@pytest.fixture(scope="module")
def factory_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("factory") / "batchnet.py"
    path.write_text(FACTORY)
    return path


@pytest.fixture(scope="module")
def model(factory_file):
    sys.path.insert(0, str(factory_file.parent))
    import batchnet

    sys.path.remove(str(factory_file.parent))
    return batchnet.build().eval()


@pytest.fixture(scope="module")
def digits64():
    return Subset(load_digits("test"), range(64))


def _run(factory_file, data, out, **kw):
    kw.setdefault("shard_size", 16)
    kw.setdefault("progress", False)
    kw.setdefault("map_dtype", "float32")
    return explain_dataset(f"{factory_file}:build", data, out=out, **kw)


def _same_rows(a, b, tol=1e-5):
    assert a["id"].tolist() == b["id"].tolist()
    assert len(set(a["id"])) == len(a)
    for col in a.columns:
        if col.endswith("_map"):
            diff = max(float(np.abs(x.astype(np.float64) - y).max()) for x, y in zip(a[col], b[col]))
            assert diff <= tol, f"{col} differs by {diff}"
        elif col != "thumbnail":
            np.testing.assert_allclose(a[col].to_numpy(np.float64), b[col].to_numpy(np.float64), atol=tol, rtol=0)


# --------------------------------------------------------------------------- rows are right
def test_rows_match_per_image_references(factory_file, model, tmp_path):
    x, y = load_digits("test").tensors
    run = _run(factory_file, Subset(load_digits("test"), range(10)), tmp_path / "r", deletion_steps=4, batch_size=4)
    df = read_results(run.out)
    assert run.rows == 10 and df["id"].tolist() == [str(i) for i in range(10)]
    assert df["label"].tolist() == y[:10].tolist()
    for i in range(10):
        xi = x[i:i + 1]
        with torch.no_grad():
            p = model(xi).softmax(1)[0]
        assert df["pred"][i] == int(p.argmax()) == df["target"][i]
        assert df["prob"][i] == pytest.approx(float(p.max()), abs=1e-6)
        # saliency: |d logit_target / d x| by plain autograd
        leaf = xi.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(model(leaf)[0, int(p.argmax())], leaf)
        np.testing.assert_allclose(df["saliency_map"][i], g[0, 0].abs().numpy(), atol=1e-6)
        cam = grad_cam(model, xi, target=int(p.argmax())).attribution[0, 0]
        np.testing.assert_allclose(df["grad_cam_map"][i], cam.numpy(), atol=1e-6)
        # the curves rank pixels by the map; near-ties of maps equal to 1e-6 may swap, so rank by the stored one
        stored = torch.from_numpy(df["grad_cam_map"][i].copy())[None]
        d = deletion_insertion(model, xi, stored, target=int(p.argmax()), steps=4, progress=False)
        assert df["grad_cam_deletion_auc"][i] == pytest.approx(float(d.deletion_auc[0]), abs=1e-6)
        assert df["grad_cam_insertion_auc"][i] == pytest.approx(float(d.insertion_auc[0]), abs=1e-6)
    assert df["grad_cam_inside"].isna().all()  # no masks in this data set


@pytest.mark.parametrize("target", ["label", 3])
def test_targets_other_than_the_prediction(factory_file, model, tmp_path, target):
    """Grad-CAM of the label (its forward pass also gives the predictions) or of a fixed class (predictions from a
    forward of their own): maps, predictions and target probabilities against plain references."""
    x, y = load_digits("test").tensors
    df = read_results(_run(factory_file, Subset(load_digits("test"), range(6)), tmp_path / "r", target=target,
                           methods=("grad_cam",), batch_size=4).out)
    for i in range(6):
        xi, t = x[i:i + 1], int(y[i]) if target == "label" else target
        with torch.no_grad():
            p = model(xi).softmax(1)[0]
        assert df["target"][i] == t and df["pred"][i] == int(p.argmax())
        assert df["prob"][i] == pytest.approx(float(p.max()), abs=1e-6)
        assert df["target_prob"][i] == pytest.approx(float(p[t]), abs=1e-6)
        np.testing.assert_allclose(df["grad_cam_map"][i], grad_cam(model, xi, target=t).attribution[0, 0].numpy(),
                                   atol=1e-6)


def test_float16_maps_round_the_float32_maps(factory_file, digits64, tmp_path):
    a = read_results(_run(factory_file, Subset(digits64, range(16)), tmp_path / "a").out)
    b = read_results(_run(factory_file, Subset(digits64, range(16)), tmp_path / "b", map_dtype="float16").out)
    assert b["grad_cam_map"][0].dtype == np.float16
    for m32, m16 in zip(a["grad_cam_map"], b["grad_cam_map"]):
        np.testing.assert_array_equal(m32.astype(np.float16), m16)


def test_batch_size_does_not_change_rows(factory_file, digits64, tmp_path):
    a = read_results(_run(factory_file, digits64, tmp_path / "a", batch_size=7).out)
    b = read_results(_run(factory_file, digits64, tmp_path / "b", batch_size=64).out)
    assert len(a) == 64 and a["index"].tolist() == list(range(64))
    _same_rows(a, b)


def test_map_size_and_options(factory_file, digits64, tmp_path):
    run = _run(factory_file, Subset(digits64, range(8)), tmp_path / "r", map_size=14,
               methods="grad-cam,guided", grad_cam={"layer": "3"}, target="label", thumbnail=0)
    df = read_results(run.out)
    assert df["grad_cam_map"][0].shape == (14, 14) and df["guided_map"][0].shape == (14, 14)
    assert "thumbnail" not in df and (df["target"] == df["label"]).all()
    man = json.loads((run.out / "manifest.json").read_text())
    assert man["settings"]["methods"][0] == {"name": "grad_cam", "options": {"layer": "3"}}


# --------------------------------------------------------------------------- inputs
def _png_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for j in range(3):
            Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8), "L").save(root / c / f"{j}.png")
    return root


def test_folder_and_file_list(factory_file, tmp_path):
    folder = _png_folder(tmp_path / "imgs")
    run = _run(factory_file, folder, tmp_path / "r", image_size=28)
    df = read_results(run.out)
    assert df["id"].tolist() == [f"{c}/{j}.png" for c in ("cat", "dog") for j in range(3)]
    assert df["label"].tolist() == [0, 0, 0, 1, 1, 1]
    assert json.loads((run.out / "manifest.json").read_text())["data"]["classes"] == ["cat", "dog"]

    def transform(im):
        return torch.from_numpy(np.asarray(im.resize((28, 28)), dtype=np.float32) / 255)[None]

    paths = [str(folder / "dog" / "1.png"), str(folder / "cat" / "0.png")]
    b = read_results(_run(factory_file, paths, tmp_path / "p", transform=transform).out)
    assert b["id"].tolist() == paths and (b["label"] == -1).all()


class _Boxed(Dataset):
    """Digits with an object box per image: the full image, nothing, the centre."""

    boxes = [(0, 0, 28, 28), (0, 0, 0, 0), (7, 7, 21, 21)]

    def __init__(self):
        self.x, self.y = load_digits("test").tensors

    def __len__(self):
        return 3

    def __getitem__(self, i):
        return {"image": self.x[i], "label": self.y[i], "box": self.boxes[i]}


def test_attribution_mass_inside_the_box(factory_file, tmp_path):
    df = read_results(_run(factory_file, _Boxed(), tmp_path / "r").out)
    for m in ("grad_cam", "saliency"):
        a = np.abs(df[f"{m}_map"][2].astype(np.float64))
        assert df[f"{m}_inside"].tolist()[:2] == [1.0, 0.0]
        assert df[f"{m}_inside"][2] == pytest.approx(a[7:21, 7:21].sum() / a.sum(), rel=1e-6)


# --------------------------------------------------------------------------- errors before any work
def test_bad_input_is_refused_before_any_work(factory_file, digits64, tmp_path):
    out = tmp_path / "out"
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(ValueError, match="no image files"):
        _run(factory_file, tmp_path / "empty", out)
    with pytest.raises(ValueError, match="unknown method.*'lime'"):
        _run(factory_file, digits64, out, methods=("grad_cam", "lime"))
    with pytest.raises(ValueError, match=r"broken raised RuntimeError: no weights here"):
        explain_dataset(f"{factory_file}:broken", digits64, out=out, progress=False)
    with pytest.raises(ValueError, match="has no attribute 'nope'"):
        explain_dataset(f"{factory_file}:nope", digits64, out=out, progress=False)
    with pytest.raises(ValueError, match="options given for \\['occlusion'\\]"):
        _run(factory_file, digits64, out, occlusion={"window": 3})
    with pytest.raises(ValueError, match="workers= is for engine='ray'"):
        _run(factory_file, digits64, out, workers=2)
    with pytest.raises(ValueError, match="engine must be 'local' or 'ray'"):
        _run(factory_file, digits64, out, engine="spark")
    with pytest.raises(TypeError, match="not an nn.Module"):
        explain_dataset(torch.nn.Conv2d(1, 2, 3), digits64, out=out, engine="ray")
    with pytest.raises(ValueError, match="no such layer|layer"):
        _run(factory_file, digits64, out, grad_cam={"layer": "no_such_layer"})
    assert not out.exists()


def test_ray_missing_is_a_clear_error(factory_file, digits64, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"cnn_explain\[ray\]"):
        _run(factory_file, digits64, tmp_path / "r", engine="ray")


def test_user_model_and_global_state_left_as_found(digits64, tmp_path):
    from cnn_explain.models import mnist_cnn

    net = mnist_cnn().train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    explain_dataset(net, Subset(digits64, range(4)), out=tmp_path / "r", progress=False)
    assert net.training and all(p.requires_grad and p.grad is None for p in net.parameters())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())


# --------------------------------------------------------------------------- resuming
def test_corrupt_or_unrecorded_shards_are_redone(factory_file, digits64, tmp_path):
    out = tmp_path / "r"
    first = _run(factory_file, digits64, out)
    ref = read_results(out)
    man = json.loads((out / "manifest.json").read_text())
    assert [s["rows"] for s in man["shards"]] == [16] * 4 and man["complete"]
    again = _run(factory_file, digits64, out)
    assert (first.computed, again.computed) == (4, 0)

    data = bytearray((out / "shard-00001.parquet").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (out / "shard-00001.parquet").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="altered"):
        read_results(out)
    man["shards"] = [s for s in man["shards"] if s["file"] != "shard-00002.parquet"]  # written, never recorded
    (out / "manifest.json").write_text(json.dumps(man))
    (out / ".shard-00003.parquet.tmp").write_bytes(b"half a shard")
    fixed = _run(factory_file, digits64, out)
    assert fixed.computed == 2 and fixed.rows == 64
    _same_rows(read_results(out), ref, tol=0)


def _to_tensor(im):
    return torch.from_numpy(np.asarray(im.resize((28, 28)), dtype=np.float32) / 255)[None]


def test_resume_in_a_new_process_keeps_the_shards(factory_file, tmp_path):
    """The manifest holds what reads back the same in any process: tuples as lists, functions by name."""
    folder = _png_folder(tmp_path / "imgs")
    kw = dict(methods={"occlusion": {"window": (7, 7), "stride": (7, 7)}}, transform=_to_tensor, shard_size=2)
    _run(factory_file, folder, tmp_path / "r", **kw)
    code = textwrap.dedent(f"""
        import sys, json
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from test_batch import _run, _to_tensor
        from pathlib import Path
        run = _run(Path({str(factory_file)!r}), {str(folder)!r}, {str(tmp_path / "r")!r},
                   methods={{"occlusion": {{"window": (7, 7), "stride": (7, 7)}}}}, transform=_to_tensor, shard_size=2)
        print(run.computed)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split()[-1] == "0"
    man = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert man["data"]["transform"] == "test_batch:_to_tensor" or man["data"]["transform"].endswith(":_to_tensor")


def test_resume_refuses_other_settings(factory_file, digits64, tmp_path):
    out = tmp_path / "r"
    _run(factory_file, Subset(digits64, range(16)), out)
    with pytest.raises(ValueError, match="different settings"):
        _run(factory_file, Subset(digits64, range(16)), out, methods=("grad_cam",))
    with pytest.raises(ValueError, match="different model"):
        explain_dataset(f"{factory_file}:build_other", Subset(digits64, range(16)), out=out, progress=False,
                        shard_size=16, map_dtype="float32")
    run = _run(factory_file, Subset(digits64, range(16)), out, methods=("grad_cam",), resume=False)
    assert run.computed == 1 and list(read_results(out).columns).count("saliency_map") == 0


KILLED = '''
import sys
sys.path.insert(0, {factory_dir!r})
import torch
torch.set_num_threads({threads})
from batchnet import SlowDigits
from cnn_explain.batch import explain_dataset
explain_dataset({spec!r}, SlowDigits(64, 0.03), out={out!r}, shard_size=16, batch_size=8, progress=False,
                map_dtype="float32")
'''


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_rows(factory_file, tmp_path):
    sys.path.insert(0, str(factory_file.parent))
    from batchnet import SlowDigits

    sys.path.remove(str(factory_file.parent))
    out = tmp_path / "killed"
    # the killed run's shards must be bitwise those of this process: same thread count, same reduction order
    script = KILLED.format(factory_dir=str(factory_file.parent), spec=f"{factory_file}:build", out=str(out),
                           threads=torch.get_num_threads())
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=tmp_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if json.loads((out / "manifest.json").read_text())["shards"]:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    man = json.loads((out / "manifest.json").read_text())
    assert not man["complete"] and 1 <= len(man["shards"]) < 4, "the kill did not land mid-run"
    resumed = _run(factory_file, SlowDigits(64, 0.0), out, batch_size=8)
    assert resumed.computed == 4 - len(man["shards"])
    whole = _run(factory_file, SlowDigits(64, 0.0), tmp_path / "whole", batch_size=8)
    _same_rows(read_results(out), read_results(whole.out), tol=0)


# --------------------------------------------------------------------------- memory
MEMORY = '''
import sys
sys.path.insert(0, {factory_dir!r})
import torch
torch.set_num_threads(1)
from batchnet import Noise, tiny
from cnn_explain.batch import explain_dataset

def vm(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024

kw = dict(methods=("grad_cam",), shard_size=256, batch_size=64, thumbnail=0, progress=False, map_dtype="float32")
explain_dataset(tiny, Noise(512), out={out!r} + "_warm", **kw)
open("/proc/self/clear_refs", "w").write("5")
before = vm("VmRSS")
explain_dataset(tiny, Noise({n}), out={out!r}, **kw)
print(vm("VmHWM") - before)
'''


@pytest.mark.slow
def test_memory_stays_flat_as_the_data_set_grows(factory_file, tmp_path):
    rise = {}
    for n in (512, 4096):
        script = MEMORY.format(factory_dir=str(factory_file.parent), out=str(tmp_path / f"m{n}"), n=n)
        res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert res.returncode == 0, res.stderr
        rise[n] = float(res.stdout.split()[-1])
    kept = 4096 * 28 * 28 * 4 * 2 / 2**20  # what keeping the maps and the inputs of every image would cost (24.5 MiB)
    assert rise[4096] < rise[512] + kept / 4, rise


# --------------------------------------------------------------------------- summaries
def test_summary_means_rankings_and_figures(factory_file, digits64, tmp_path):
    run = _run(factory_file, digits64, tmp_path / "r", deletion_steps=3)
    df = read_results(run.out)
    s = summarize_dataset(run.out, top=5)
    for c in range(10):
        sel = df[df["label"] == c]
        assert s.counts[c] == len(sel)
        np.testing.assert_allclose(s.mean_maps["grad_cam"][c], np.mean(np.stack(sel["grad_cam_map"]), 0), atol=1e-6)
    wrong = df[df["pred"] != df["label"]].sort_values("prob", ascending=False)
    assert s.confident_mistakes["id"].tolist() == wrong["id"].head(5).tolist()
    assert s.worst_deletion["saliency"]["deletion_auc"].is_monotonic_decreasing
    assert len(s.worst_deletion["saliency"]) == 5 and not len(s.outside["grad_cam"])  # no masks: no ranking
    paths = s.save(tmp_path / "fig")
    assert {p.name for p in paths} >= {"class_0.png", "deletion_grad_cam.png"}
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_example_runs(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("example_batch", ROOT / "examples" / "batch_dataset.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--untrained", "--images", "24", "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "results" / "manifest.json").is_file()
    assert list((tmp_path / "o" / "figures").glob("class_*.png"))
    assert "rows" in capsys.readouterr().out


# --------------------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def local_ray(factory_file):
    ray = pytest.importorskip("ray")  # the `ray` extra; `make test` installs it
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"py_modules": [str(factory_file)]})
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_engine_equals_local_for_any_worker_count(factory_file, digits64, tmp_path, local_ray):
    local = _run(factory_file, digits64, tmp_path / "local", batch_size=64)
    two = _run(factory_file, digits64, tmp_path / "ray2", engine="ray", workers=2, batch_size=7)
    one = _run(factory_file, digits64, tmp_path / "ray1", engine="ray", workers=1)
    assert two.engine.value == "ray" and two.computed == 4
    ref = read_results(local.out)
    _same_rows(read_results(two.out), ref)
    _same_rows(read_results(one.out), ref)


@pytest.mark.slow
def test_ray_weights_travel_and_workers_check_the_model(factory_file, model, digits64, tmp_path, local_ray):
    other = copy.deepcopy(model)  # same architecture, other weights
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in other.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    ckpt = tmp_path / "w.pt"
    torch.save(other.state_dict(), ckpt)
    data = Subset(digits64, range(16))
    a = _run(factory_file, data, tmp_path / "ray", engine="ray", workers=1, weights=ckpt)
    b = _run(factory_file, data, tmp_path / "local", weights=ckpt)
    _same_rows(read_results(a.out), read_results(b.out))
    with pytest.raises(Exception, match="different weights on a worker"):
        explain_dataset(f"{factory_file}:unseeded", data, out=tmp_path / "u", engine="ray", workers=1,
                        progress=False)


@pytest.mark.slow
def test_ray_dataset_input_streams_into_the_same_shards(factory_file, digits64, tmp_path, local_ray):
    x, y = (t[:40] for t in load_digits("test").tensors)
    ds = local_ray.data.from_items([{"image": x[i].numpy(), "label": int(y[i]), "box": [7, 7, 21, 21]}
                                    for i in range(40)], override_num_blocks=5)
    ref = read_results(_run(factory_file, Subset(digits64, range(40)), tmp_path / "ref", map_dtype="float16").out)
    local = _run(factory_file, ds, tmp_path / "local", map_dtype="float16", batch_size=16)
    pool = _run(factory_file, ds, tmp_path / "ray", map_dtype="float16", batch_size=16, engine="ray", workers=2)
    for run in (local, pool):
        df = read_results(run.out)
        assert df["id"].tolist() == ref["id"].tolist() and df["label"].tolist() == ref["label"].tolist()
        for a, b in zip(df["grad_cam_map"], ref["grad_cam_map"]):  # float16 maps from float32 maps equal to ~1e-7
            np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), rtol=1e-3, atol=1e-6)
        a = np.abs(df["saliency_map"][3].astype(np.float64))
        assert df["saliency_inside"][3] == pytest.approx(a[7:21, 7:21].sum() / a.sum(), rel=1e-3)
    man = json.loads((pool.out / "manifest.json").read_text())
    man["shards"] = man["shards"][:1]
    (pool.out / "manifest.json").write_text(json.dumps(man))
    again = _run(factory_file, ds, tmp_path / "ray", map_dtype="float16", batch_size=16, engine="ray", workers=2)
    assert again.computed == 2 and read_results(again.out)["id"].tolist() == ref["id"].tolist()


def test_command_line_helpers(tmp_path):
    from cnn_explain.batch import parse_method_options

    assert parse_method_options(["grad-cam.layer=features.7", "occlusion.window=(4, 4)", "saliency.abs=False"]) == {
        "grad_cam": {"layer": "features.7"}, "occlusion": {"window": (4, 4)}, "saliency": {"abs": False}}
    with pytest.raises(ValueError, match="METHOD.KEY=VALUE"):
        parse_method_options(["window=4"])
    run = explain_dataset("digits", Subset(load_digits("test"), range(4)), out=tmp_path / "d", progress=False,
                          methods=("grad_cam",))
    man = json.loads((run.out / "manifest.json").read_text())
    assert man["model"]["source"] == "cnn_explain.train:pretrained_digits_cnn"
    assert (read_results(run.out)["pred"] == read_results(run.out)["label"]).mean() > 0.5  # the trained model


def test_grad_cams_default_layer_is_found_once_per_model_and_input_shape(tiny_resnet, monkeypatch):
    """The probe forward that finds Grad-CAM's default layer runs once per model and input shape, not per batch;
    another input shape or a model whose modules changed is probed again."""
    import cnn_explain.attribution.cam as cam_module
    from cnn_explain.batch._compute import _cam_site

    probes = []
    real = cam_module.cam_layer
    monkeypatch.setattr(cam_module, "cam_layer", lambda m, x, layer: probes.append(x.shape) or real(m, x, layer))
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    first = _cam_site(tiny_resnet, x, None)
    assert first == real(tiny_resnet, x, None) and len(probes) == 1
    assert _cam_site(tiny_resnet, x[:1], None) is first and len(probes) == 1  # another batch: cached
    assert _cam_site(tiny_resnet, x, "layer1") == "layer1" and len(probes) == 1  # a chosen layer: no probe
    _cam_site(tiny_resnet, torch.rand(2, 3, 20, 20), None)
    assert len(probes) == 2  # another input shape
    tiny_resnet.layer2 = nn.Sequential(tiny_resnet.layer2, nn.Conv2d(16, 16, 1))
    assert _cam_site(tiny_resnet, x, None) == real(tiny_resnet, x, None) and len(probes) == 3  # changed modules
