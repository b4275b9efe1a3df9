"""data.py: embedded digits and photos, and the local loaders on tiny files written in each format."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cnn_explain.data import (
    DIGIT_CLASSES, ImageFolder, load_cifar10_batches, load_digits, load_mnist_idx, sample_image,
)


def _rows(x: torch.Tensor) -> list[bytes]:
    return sorted(r.numpy().tobytes() for r in (x * 255).round().to(torch.uint8).reshape(len(x), -1))


def test_digits_values_split_and_determinism():
    from sklearn.datasets import load_digits as sk

    d = sk()
    full = load_digits("all", size=8)
    x, y = full.tensors
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal((x[:, 0] * 255).round().to(torch.uint8), torch.from_numpy(np.round(d.images * 255 / 16).astype(np.uint8)))
    assert torch.equal(y, torch.from_numpy(d.target))
    train, test = load_digits("train", size=8), load_digits("test", size=8)
    assert (len(train), len(test)) == (1347, 450)
    assert _rows(torch.cat([train.tensors[0], test.tensors[0]])) == _rows(x)  # a partition of all images
    counts = torch.bincount(test.tensors[1], minlength=10)
    assert torch.all((counts - torch.bincount(y) * 0.25).abs() <= 1)  # stratified
    again = load_digits("test", size=8)
    assert torch.equal(again.tensors[0], test.tensors[0])
    assert not torch.equal(load_digits("test", size=8, seed=1).tensors[1], test.tensors[1])
    assert DIGIT_CLASSES == [str(i) for i in range(10)]


def test_digits_resized_bilinearly():
    small, big = load_digits("test", size=8).tensors[0], load_digits("test").tensors[0]
    assert big.shape == (450, 1, 28, 28) and 0.0 <= big.min() and big.max() <= 1.0
    torch.testing.assert_close(big, F.interpolate(small, size=(28, 28), mode="bilinear", align_corners=False))
    with pytest.raises(ValueError, match="split"):
        load_digits("validation")


def test_sample_images():
    for name, shape in [("china", (3, 427, 640)), ("flower", (3, 427, 640)), ("grace_hopper", (3, 600, 512))]:
        img = sample_image(name)
        assert img.shape == shape and img.dtype == torch.float32 and 0 <= img.min() and img.max() <= 1
    assert sample_image("china", size=32).shape == (3, 32, 32)
    assert sample_image("flower", size=(20, 30)).shape == (3, 20, 30)
    with pytest.raises(ValueError, match="name must be"):
        sample_image("mona_lisa")
    with pytest.raises(TypeError, match="size"):
        sample_image("china", size="big")


def test_image_folder(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {}
    for cls in ("dog", "cat"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            a = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
            Image.fromarray(a).save(tmp_path / cls / f"{i}.png")
            arrays[cls, i] = a
    (tmp_path / "cat" / "notes.txt").write_text("ignored")
    ds = ImageFolder(tmp_path)
    assert ds.classes == ["cat", "dog"] and len(ds) == 4 and ds.targets == [0, 0, 1, 1]
    x, label = ds[2]
    assert label == 1 and torch.equal((x * 255).round().to(torch.uint8).permute(1, 2, 0), torch.from_numpy(arrays["dog", 0]))
    batch = next(iter(torch.utils.data.DataLoader(ImageFolder(tmp_path, size=4, mode="L"), batch_size=4)))
    assert batch[0].shape == (4, 1, 4, 4) and batch[1].tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="not a folder"):
        ImageFolder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no subfolders"):
        ImageFolder(tmp_path / "empty")


def _write_cifar_batch(path, data, labels):
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"test", b"labels": labels, b"data": data, b"filenames": []}, f)


def test_cifar10_batches(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    d1, d2, dt = (rng.integers(0, 256, (n, 3072), dtype=np.uint8) for n in (3, 2, 4))
    _write_cifar_batch(root / "data_batch_1", d1, [0, 9, 3])
    _write_cifar_batch(root / "data_batch_2", d2, [1, 1])
    _write_cifar_batch(root / "test_batch", dt, [5, 6, 7, 8])
    names = [f"c{i}".encode() for i in range(10)]
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, f)
    train, classes = load_cifar10_batches(tmp_path)
    x, y = train.tensors
    assert classes == [f"c{i}" for i in range(10)] and y.tolist() == [0, 9, 3, 1, 1]
    assert x.shape == (5, 3, 32, 32)
    raw = (x * 255).round().to(torch.uint8).reshape(5, 3072).numpy()
    assert np.array_equal(raw, np.concatenate([d1, d2]))
    assert np.array_equal((x[0, 1] * 255).round().numpy(), d1[0, 1024:2048].reshape(32, 32))  # green plane, row-major
    test, _ = load_cifar10_batches(root, split="test")
    assert test.tensors[1].tolist() == [5, 6, 7, 8]
    one, _ = load_cifar10_batches([root / "data_batch_2"])
    assert len(one) == 2
    (root / "junk").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a CIFAR-10 python batch"):
        load_cifar10_batches(root / "junk")
    with pytest.raises(ValueError, match="no such file"):
        load_cifar10_batches(tmp_path / "missing_batch")


def _idx(magic: int, dims, body: bytes) -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + body


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx(tmp_path, gz):
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (4, 5, 6), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1], dtype=np.uint8)
    wrap = gzip.compress if gz else (lambda b: b)
    suffix = ".gz" if gz else ""
    ip, lp = tmp_path / f"img-idx3-ubyte{suffix}", tmp_path / f"lab-idx1-ubyte{suffix}"
    ip.write_bytes(wrap(_idx(0x00000803, images.shape, images.tobytes())))
    lp.write_bytes(wrap(_idx(0x00000801, labels.shape, labels.tobytes())))
    ds = load_mnist_idx(ip, lp)
    x, y = ds.tensors
    assert x.shape == (4, 1, 5, 6) and y.dtype == torch.int64 and y.tolist() == [3, 1, 4, 1]
    assert np.array_equal((x[:, 0] * 255).round().to(torch.uint8).numpy(), images)


def test_mnist_idx_errors(tmp_path):
    images = np.zeros((2, 3, 3), np.uint8)
    ip, lp, bad = tmp_path / "i", tmp_path / "l", tmp_path / "b"
    ip.write_bytes(_idx(0x803, images.shape, images.tobytes()))
    lp.write_bytes(_idx(0x801, (3,), bytes(3)))
    bad.write_bytes(_idx(0x802, (2, 3), bytes(6)))
    with pytest.raises(ValueError, match="images_path has 2 images but labels_path has 3"):
        load_mnist_idx(ip, lp)
    with pytest.raises(ValueError, match=r"images_path=.*magic number 0x00000802, expected 0x00000803"):
        load_mnist_idx(bad, lp)
    (tmp_path / "t").write_bytes(_idx(0x803, (2, 3, 3), bytes(5)))
    with pytest.raises(ValueError, match="header says"):
        load_mnist_idx(tmp_path / "t", lp)
    with pytest.raises(ValueError, match="labels_path=.*no such file"):
        load_mnist_idx(ip, tmp_path / "missing")
