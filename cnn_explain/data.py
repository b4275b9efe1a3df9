"""Data that needs no download and loaders for a user's own files.

Embedded:

* :func:`load_digits` — scikit-learn's 1,797 real handwritten digits (8×8, grey
  levels 0..16), scaled to 0..255 and then ``value/255`` as seed 001 teaches,
  resized bilinearly to ``size`` (28 for :func:`cnn_explain.models.mnist_cnn`),
  split into train/test with a fixed, seeded, stratified split.
* :func:`sample_image` — photos shipped with scikit-learn (``"china"``,
  ``"flower"``) and Matplotlib (``"grace_hopper"``).

From local paths (nothing is ever downloaded):

* :class:`ImageFolder` — ``root/<class>/<image>`` folders;
* :func:`load_cifar10_batches` — CIFAR-10 "python version" pickles;
* :func:`load_mnist_idx` — MNIST / Fashion-MNIST IDX files, optionally gzipped.

Images are ``(C, H, W)`` float32 tensors in [0, 1] (image files are read by
:func:`cnn_explain.images.load_image`); data sets yield ``(image, label)`` with
int64 labels.

Example:
    >>> train = load_digits("train")
    >>> x, y = train[0]
    >>> tuple(x.shape), x.dtype, int(y) in range(10)
    ((1, 28, 28), torch.float32, True)
"""

from __future__ import annotations

import functools
import gzip
import os
import pickle
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from .images import IMAGE_SUFFIXES, load_image, size_hw, to_batch

__all__ = [
    "DIGIT_CLASSES", "CIFAR10_CLASSES", "load_digits", "sample_image", "ImageFolder", "load_cifar10_batches",
    "load_mnist_idx",
]

PathLike = Union[str, os.PathLike]
DIGIT_CLASSES: list[str] = [str(i) for i in range(10)]
CIFAR10_CLASSES: list[str] = ["airplane", "automobile", "bird", "cat", "deer",
                              "dog", "frog", "horse", "ship", "truck"]


# --------------------------------------------------------------------------- sample photos
def sample_image(name: str = "china", *, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """A photo shipped with scikit-learn or Matplotlib as a ``(3, H, W)`` float32 tensor in [0, 1].

    Args:
        name: ``"china"`` (427×640), ``"flower"`` (427×640) or ``"grace_hopper"`` (600×512).
        size: None (keep), an int (square) or ``(H, W)``; bilinear resize.
    """
    from PIL import Image

    hw = size_hw(size)
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        img = Image.fromarray(load_sample_image(f"{name}.jpg"))
    elif name == "grace_hopper":
        from matplotlib import cbook

        with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as f:
            img = f.convert("RGB")
    else:
        raise ValueError(f"name must be 'china', 'flower' or 'grace_hopper', got {name!r}")
    return to_batch(img, argname="name", size=hw)[0]


# --------------------------------------------------------------------------- digits
@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as uint8 0..255 ``(1797, 8, 8)`` and labels (read once, read-only)."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    pixels = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    pixels.flags.writeable = False
    target = d.target.copy()
    target.flags.writeable = False
    return pixels, target


def load_digits(split: str = "train", *, size: int = 28, seed: int = 0, test_size: float = 0.25) -> TensorDataset:
    """scikit-learn's handwritten digits as ``(N, 1, size, size)`` float32 images in [0, 1] and int64 labels.

    The 8×8 grey levels 0..16 become ``uint8 = round(v·255/16)`` and then
    ``value/255`` (seed 001's normalization); images are resized bilinearly to
    ``size×size``. The train/test split is stratified and fixed by ``seed``.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"`` (all 1,797 in scikit-learn's order).
        size: output side in pixels (28 fits :func:`cnn_explain.models.mnist_cnn`; 8 keeps the originals).
        seed: seed of the split.
        test_size: fraction of each class held out for ``"test"`` (0.25: 1,347 train / 450 test).

    Example:
        >>> len(load_digits("train")), len(load_digits("test"))
        (1347, 450)
    """
    from sklearn.model_selection import train_test_split

    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    size = int(size)
    if size < 1:
        raise ValueError(f"size must be a positive int, got {size}")
    if not 0.0 < float(test_size) < 1.0:
        raise ValueError(f"test_size must be a fraction in (0, 1), got {test_size}")
    pixels, target = _digits_arrays()
    x = torch.from_numpy(pixels.copy()).float().div_(255.0).unsqueeze(1)
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    y = torch.from_numpy(target.astype(np.int64))
    if split == "all":
        return TensorDataset(x, y)
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=test_size, random_state=seed,
                                           stratify=target)
    idx = torch.from_numpy(np.sort(idx_train if split == "train" else idx_test))
    return TensorDataset(x[idx], y[idx])


# --------------------------------------------------------------------------- image folders
class ImageFolder(Dataset):
    """Images in ``root/<class name>/<file>``: one subfolder per class, classes sorted by name.

    Args:
        root: the folder holding one subfolder per class.
        size: None (keep each image's size; images of different sizes then cannot
            be batched), an int (square) or ``(H, W)``.
        mode: ``"RGB"`` or ``"L"``.
        extensions: file suffixes taken as images (case-insensitive).

    Attributes:
        classes: the class names (subfolder names, sorted); label ``i`` is ``classes[i]``.
        samples: ``(path, label)`` pairs, sorted by class then file name.
        targets: the labels, in the order of ``samples``.

    Items are ``(image (C, H, W) float32 in [0, 1], label int)``.
    """

    def __init__(self, root: PathLike, size: int | tuple[int, int] | None = None, mode: str = "RGB",
                 extensions: Sequence[str] = IMAGE_SUFFIXES) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"root={str(root)!r} is not a folder (expected one subfolder per class)")
        if mode not in ("RGB", "L"):
            raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
        self.size, self.mode = size_hw(size), mode
        self.classes = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not self.classes:
            raise ValueError(f"root={str(root)!r} has no subfolders; expected one subfolder per class")
        self.samples = _folder_samples(self.root, self.classes, tuple(e.lower() for e in extensions))
        self.targets = [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        try:
            return load_image(path, size=self.size, mode=self.mode), label
        except ValueError as exc:  # a corrupt or truncated image file: say which one, in which folder
            raise ValueError(f"ImageFolder {str(self.root)!r}: {path} is not a readable image ({exc}); "
                             "repair or remove it") from exc


def _folder_samples(root: Path, classes: list[str], exts: tuple[str, ...]) -> list[tuple[Path, int]]:
    """``(file, label)`` of every image (by its suffix) in the class folders, sorted; other files are ignored.

    Raises:
        ValueError: naming the folder: a class folder without image files.
    """
    samples: list[tuple[Path, int]] = []
    for label, c in enumerate(classes):
        files = sorted(f for f in (root / c).iterdir() if f.is_file() and not f.name.startswith("."))
        images = [f for f in files if f.suffix.lower() in exts]
        if not images:
            raise ValueError(f"ImageFolder {str(root)!r}: the class folder {str(root / c)!r} holds no image files "
                             f"({', '.join(exts)}); remove the folder or add its images")
        samples += [(f, label) for f in images]
    return samples


# --------------------------------------------------------------------------- CIFAR-10
#: The only globals a CIFAR-10 batch refers to: NumPy's array / dtype / scalar reconstruction, and
#: ``_codecs.encode``, with which protocol-2 pickles written by Python 3 rebuild ``bytes`` (a pure data codec).
_CIFAR_GLOBALS = frozenset({
    ("_codecs", "encode"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
})


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that builds only dicts, lists, tuples, bytes, str, numbers and NumPy arrays.

    Any other global (``os.system``, ``builtins.eval``, a class of the file's
    choosing) is refused, so a crafted file cannot run code.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a CIFAR-10 batch never holds "
                                         "(only NumPy arrays, dicts, lists, bytes, str and numbers are allowed)")
        with warnings.catch_warnings():  # numpy.core is a deprecated alias of numpy._core in NumPy 2
            warnings.simplefilter("ignore", DeprecationWarning)
            return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    """A CIFAR-10 pickle -> dict with str keys, through :class:`_CifarUnpickler` (no code runs).

    Raises:
        ValueError: naming ``path``: unreadable, truncated, not a dict, or refers to anything but NumPy arrays.
    """
    try:
        with open(path, "rb") as f:
            d = _CifarUnpickler(f, encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError) as exc:
        raise ValueError(f"{str(path)!r} is not a CIFAR-10 python batch: {exc}") from exc
    if not isinstance(d, dict):
        raise ValueError(f"{str(path)!r} is not a CIFAR-10 python batch (expected a pickled dict)")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}


def _cifar_files(root_or_files: Any, split: str) -> list[Path]:
    if isinstance(root_or_files, (str, os.PathLike)) and Path(root_or_files).is_dir():
        root = Path(root_or_files)
        if (root / "cifar-10-batches-py").is_dir():
            root = root / "cifar-10-batches-py"
        pattern = "data_batch_*" if split == "train" else "test_batch"
        files = sorted(root.glob(pattern))
        if not files:
            raise ValueError(f"root_or_files={str(root_or_files)!r}: no {pattern!r} file in that folder")
        return files
    items = [root_or_files] if isinstance(root_or_files, (str, os.PathLike)) else list(root_or_files)
    files = [Path(p) for p in items]
    missing = [str(p) for p in files if not p.is_file()]
    if missing or not files:
        raise ValueError(f"root_or_files: no such file(s) {missing}; give a folder or CIFAR-10 batch files")
    return files


def load_cifar10_batches(root_or_files: PathLike | Sequence[PathLike], split: str = "train") -> tuple[TensorDataset, list[str]]:
    """Load CIFAR-10 "python version" batches from local files.

    Each batch is a pickled dict with ``b'data'`` (uint8, N×3072: 1,024 red, then
    green, then blue values of a 32×32 image, row-major) and ``b'labels'``;
    ``batches.meta`` next to them holds ``b'label_names'``.

    Args:
        root_or_files: a folder (``cifar-10-batches-py`` or its parent; ``split``
            picks ``data_batch_*`` or ``test_batch``) or one or more batch files.
        split: ``"train"`` or ``"test"`` (used with a folder only).

    Returns:
        ``(TensorDataset of (N, 3, 32, 32) float32 in [0, 1] and int64 labels, class names)``.
        Class names come from ``batches.meta`` if present, else the standard CIFAR-10 names.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    files = _cifar_files(root_or_files, split)
    xs, ys = [], []
    for f in files:
        d = _unpickle(f)
        if "data" not in d or "labels" not in d:
            raise ValueError(f"{str(f)!r} has no 'data'/'labels' entries (keys: {sorted(map(str, d))})")
        data = np.asarray(d["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072 or len(d["labels"]) != len(data):
            raise ValueError(f"{str(f)!r}: data must be N×3072 uint8 with N labels, got {data.shape}")
        xs.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        ys.append(torch.as_tensor(list(d["labels"]), dtype=torch.int64))
    x = torch.cat(xs).float().div_(255.0)
    meta = files[0].parent / "batches.meta"
    classes = list(CIFAR10_CLASSES)
    if meta.is_file():
        names = _unpickle(meta).get("label_names")
        if names:
            classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return TensorDataset(x, torch.cat(ys)), classes


# --------------------------------------------------------------------------- MNIST IDX
def _read_idx(path: PathLike, argname: str, ndim: int) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{argname}={str(path)!r}: no such file")
    with open(p, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as exc:  # truncated or corrupt .gz
            raise ValueError(f"{argname}={str(path)!r} is a damaged gzip file (truncated or corrupt: {exc}); "
                             "download or decompress it again") from exc
    expected = 0x0800 + ndim
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] != ndim:
        magic = f"0x{int.from_bytes(raw[:4], 'big'):08X}" if len(raw) >= 4 else "missing"
        raise ValueError(f"{argname}={str(path)!r} is not an IDX file of unsigned bytes with {ndim} dims "
                         f"(magic number {magic}, expected 0x{expected:08X})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{argname}={str(path)!r}: the IDX header is truncated ({len(raw)} bytes; "
                         f"{header} needed for the magic number and {ndim} dimension sizes)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(raw, dtype=np.uint8, offset=header)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{argname}={str(path)!r}: header says {dims} but the file holds {body.size} values "
                         "(truncated or not this kind of file)")
    return body.reshape(dims)


def load_mnist_idx(images_path: PathLike, labels_path: PathLike) -> TensorDataset:
    """Load MNIST-style IDX files (optionally gzipped) from local paths.

    IDX: a big-endian magic number ``0x00000803`` (images: unsigned bytes, 3 dims)
    or ``0x00000801`` (labels, 1 dim), one big-endian int32 per dimension, then the values.

    Returns:
        A ``TensorDataset`` of ``(N, 1, H, W)`` float32 images (``value/255``) and int64 labels.

    Raises:
        ValueError: a missing file, a wrong magic number, a truncated file, or
            different numbers of images and labels.
    """
    images = _read_idx(images_path, "images_path", 3)
    labels = _read_idx(labels_path, "labels_path", 1)
    if len(images) != len(labels):
        raise ValueError(f"images_path has {len(images)} images but labels_path has {len(labels)} labels")
    x = torch.from_numpy(images.copy()).float().div_(255.0).unsqueeze(1)
    return TensorDataset(x, torch.from_numpy(labels.astype(np.int64)))
