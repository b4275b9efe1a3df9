"""Files: no code runs from a data file, no file the toolkit did not write is deleted or overwritten,
and the loaders say which file is wrong and how."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from cnn_explain import explain
from cnn_explain.data import ImageFolder, load_cifar10_batches, load_mnist_idx
from cnn_explain.report import SECTIONS, check_out_folder, write_report


# --------------------------------------------------------------------------- no code from a data file
class _Payload:
    """Unpickling this would create ``marker`` (os.system is the classic; creating a file is the same attack)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_cifar_batch_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    batch = tmp_path / "data_batch_1"
    with open(batch, "wb") as f:
        pickle.dump({b"data": _Payload(str(marker)), b"labels": [0]}, f)
    with pytest.raises(ValueError, match=r"data_batch_1.*os\.system|data_batch_1.*posix\.system"):
        load_cifar10_batches(batch)
    assert not marker.exists()


def test_a_malicious_batches_meta_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    rng = np.random.default_rng(0)
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"labels": [1, 2]}, f)
    with open(tmp_path / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": _Payload(str(marker))}, f)
    with pytest.raises(ValueError, match="batches.meta"):
        load_cifar10_batches(tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_a_real_cifar_format_batch_still_loads(tmp_path, protocol):
    """What CIFAR files hold: a dict of bytes keys, a uint8 array, a list of ints, bytes names; NumPy scalars too."""
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"batch_label": b"training batch 1 of 5", b"labels": [3, 1, np.int64(4)], b"data": data,
                     b"filenames": [b"a.png", b"b.png", b"c.png"], b"mean": np.float32(0.5)}, f, protocol=protocol)
    with open(tmp_path / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"k{i}".encode() for i in range(10)], b"num_vis": 3072}, f, protocol=protocol)
    ds, classes = load_cifar10_batches(tmp_path)
    x, y = ds.tensors
    assert classes == [f"k{i}" for i in range(10)] and y.tolist() == [3, 1, 4]
    assert np.array_equal((x * 255).round().to(torch.uint8).reshape(3, 3072).numpy(), data)


# --------------------------------------------------------------------------- loaders that explain
def _idx(magic: int, dims, body: bytes) -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + body


def test_truncated_idx_header(tmp_path):
    labels = tmp_path / "labels"
    labels.write_bytes(_idx(0x801, (2,), bytes(2)))
    short = tmp_path / "images-idx3-ubyte"
    short.write_bytes(_idx(0x803, (2, 3, 3), b"")[:9])  # magic and one and a bit dimension sizes
    with pytest.raises(ValueError, match=r"images_path=.*images-idx3-ubyte.*header is truncated"):
        load_mnist_idx(short, labels)


def test_truncated_gz(tmp_path):
    images = tmp_path / "images-idx3-ubyte.gz"
    whole = gzip.compress(_idx(0x803, (2, 3, 3), bytes(18)))
    images.write_bytes(whole[: len(whole) // 2])
    labels = tmp_path / "labels.gz"
    labels.write_bytes(gzip.compress(_idx(0x801, (2,), bytes(2))))
    with pytest.raises(ValueError, match=r"images_path=.*images-idx3-ubyte\.gz.*damaged gzip"):
        load_mnist_idx(images, labels)


def _png(path, size=(6, 6)) -> None:
    Image.fromarray(np.full((*size, 3), 128, np.uint8)).save(path)


def test_image_folder_errors_name_the_path(tmp_path):
    (tmp_path / "empty_root").mkdir()
    with pytest.raises(ValueError, match="empty_root.*no subfolders"):
        ImageFolder(tmp_path / "empty_root")

    root = tmp_path / "data"
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    _png(root / "cat" / "1.png")
    with pytest.raises(ValueError, match=r"dog.*holds no image files"):
        ImageFolder(root)

    _png(root / "dog" / "1.png")
    (root / "dog" / "notes.txt").write_text("not an image: ignored, it has no image suffix")
    (root / "dog" / "2.jpg").write_text("<html>a web page saved as .jpg</html>")  # a non-image file
    good = (root / "dog" / "1.png").read_bytes()
    (root / "dog" / "3.png").write_bytes(good[: len(good) // 2])  # a corrupt (truncated) PNG
    ds = ImageFolder(root)
    assert [p.name for p, _ in ds.samples] == ["1.png", "1.png", "2.jpg", "3.png"]
    assert ds[0][0].shape == ds[1][0].shape == (3, 6, 6)
    with pytest.raises(ValueError, match=r"dog/2\.jpg is not a readable image.*repair or remove it"):
        ds[2]
    with pytest.raises(ValueError, match=r"dog/3\.png is not a readable image"):
        ds[3]


# --------------------------------------------------------------------------- no lost user files
def _tiny():
    from conftest import TinyNet, _seeded

    return explain(_seeded(TinyNet))


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_foreign_folder_with_a_manifest_is_never_touched(tmp_path, monkeypatch):
    app = tmp_path / "webapp"
    app.mkdir()
    (app / "app.js").write_text("console.log('mine')")
    (app / "index.html").write_text("<html>my app</html>")
    (app / "manifest.json").write_text(json.dumps({"name": "My PWA", "start_url": "/"}))
    before = _snapshot(app)

    def never(*a, **k):  # the check comes before any work
        raise AssertionError("sections were built before the folder was checked")

    monkeypatch.setattr("cnn_explain.report.core._build_sections", never)
    with pytest.raises(ValueError, match=r"webapp.*not a cnn_explain report.*app\.js.*choose a new or empty folder"):
        write_report(_tiny(), torch.rand(1, 3, 16, 16), out=app, progress=False, sections=["summary"])
    assert _snapshot(app) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["webapp"]


def test_a_report_folder_with_a_user_file_is_refused(tmp_path):
    ex = _tiny()
    res = write_report(ex, torch.rand(1, 3, 16, 16), out=tmp_path / "r", progress=False, sections=["summary"])
    (res.folder / "notes.txt").write_text("my notes")
    before = _snapshot(res.folder)
    with pytest.raises(ValueError, match=r"holds files it did not write \(notes\.txt\).*move those files"):
        write_report(ex, torch.rand(1, 3, 16, 16), out=tmp_path / "r", progress=False, sections=["summary"])
    assert _snapshot(res.folder) == before
    (res.folder / "notes.txt").unlink()
    new = write_report(ex, torch.rand(1, 3, 16, 16), out=tmp_path / "r", progress=False, sections=["predictions"])
    assert sorted(p.name for p in new.folder.iterdir()) == sorted(
        ["index.html", "manifest.json"] + [f.file for f in new.figures] + [f.svg for f in new.figures if f.svg])
    assert json.loads((new.folder / "manifest.json").read_text())["generator"] == "cnn_explain"


def test_a_file_saved_during_the_run_is_kept(tmp_path, monkeypatch):
    ex = _tiny()
    write_report(ex, torch.rand(1, 3, 16, 16), out=tmp_path / "r", progress=False, sections=["summary"])
    build = SECTIONS["summary"][1]

    def build_and_save_notes(ctx):
        (tmp_path / "r" / "notes.txt").write_text("written while the report ran")
        return build(ctx)

    monkeypatch.setitem(SECTIONS, "summary", (SECTIONS["summary"][0], build_and_save_notes))
    with pytest.raises(ValueError, match="notes.txt"):
        write_report(ex, torch.rand(1, 3, 16, 16), out=tmp_path / "r", progress=False, sections=["summary"])
    assert (tmp_path / "r" / "notes.txt").read_text() == "written while the report ran"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # no temporary folder left


def test_check_out_folder(tmp_path):
    assert check_out_folder(tmp_path / "new") == tmp_path / "new" and not (tmp_path / "new").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        check_out_folder(tmp_path / "file")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a cnn_explain report"):
        check_out_folder(tmp_path / "bad")


def test_manifest_is_strict_json(tmp_path, monkeypatch):
    monkeypatch.setitem(SECTIONS, "summary", ("Model summary", lambda ctx: ("<p>x</p>", {"score": float("nan"),
                                                                                         "top": float("inf")})))
    res = write_report(_tiny(), torch.rand(1, 3, 16, 16), out=tmp_path / "r", progress=False, sections=["summary"])

    def reject(constant):
        raise ValueError(f"not strict JSON: {constant}")

    manifest = json.loads((res.folder / "manifest.json").read_text(), parse_constant=reject)
    assert manifest["sections"][0]["info"] == {"score": None, "top": None} == res.manifest["sections"][0]["info"]


def test_cli_refuses_a_foreign_folder_before_loading_the_model(tmp_path, monkeypatch, capsys):
    from cnn_explain.cli import main

    app = tmp_path / "webapp"
    app.mkdir()
    (app / "app.js").write_text("x")
    (app / "manifest.json").write_text("{}")
    before = _snapshot(app)
    img = tmp_path / "img.png"
    _png(img, (16, 16))

    def never(*a, **k):
        raise AssertionError("the model was loaded before --out was checked")

    monkeypatch.setattr("cnn_explain.cli._load.load_model", never)
    monkeypatch.setattr("cnn_explain.train.pretrained_digits_cnn", never)
    for argv in (["report", "--images", str(img)], ["demo"]):
        assert main([*argv, "--out", str(app)]) == 2
        err = capsys.readouterr().err.splitlines()[-1]
        assert err.startswith(f"cnn-explain {argv[0]}: error: --out ") and "not a cnn_explain report" in err, err
    assert _snapshot(app) == before
