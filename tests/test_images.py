"""cnn_explain.images: the one conversion of image-like inputs, image files in and out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnn_explain.images import IMAGE_SUFFIXES, is_image_file, list_images, load_image, save_image, to_batch


def _rgb(h: int = 6, w: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _ref(arr: np.ndarray) -> torch.Tensor:
    """The hand-written conversion: uint8 / 255, channels first, a batch of one."""
    t = torch.from_numpy(arr.astype(np.float32) / 255)
    return (t[None] if t.dim() == 2 else t.permute(2, 0, 1))[None]


def test_every_kind_of_input_gives_the_same_batch(tmp_path):
    arr = _rgb()
    ref = _ref(arr)
    path = tmp_path / "a.png"
    Image.fromarray(arr).save(path)
    for x in (arr, Image.fromarray(arr), ref[0], ref, path, str(path)):
        out = to_batch(x)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
    grey = arr[:, :, 0]
    torch.testing.assert_close(to_batch(grey), _ref(grey), rtol=0, atol=0)
    torch.testing.assert_close(to_batch(Image.fromarray(grey)), _ref(grey), rtol=0, atol=0)
    assert to_batch(torch.zeros(6, 5)).shape == (1, 1, 6, 5)


def test_float_arrays_keep_their_values_and_layout():
    chw = np.random.default_rng(1).random((3, 4, 5))
    torch.testing.assert_close(to_batch(chw), torch.from_numpy(chw).float()[None])
    nhwc = np.random.default_rng(2).random((2, 6, 5, 3)).astype(np.float32)
    torch.testing.assert_close(to_batch(nhwc), torch.from_numpy(nhwc).permute(0, 3, 1, 2))


def test_tensors_are_not_copied_or_modified():
    x = torch.rand(2, 3, 4, 4)
    before = x.clone()
    out = to_batch(x)
    assert out is x  # already a float32 batch: nothing to do
    out64 = to_batch(x, dtype=torch.float64)
    assert out64.dtype == torch.float64 and torch.equal(x, before)


def test_lists_are_concatenated_and_checked():
    a, b = _rgb(seed=0), _rgb(seed=1)
    out = to_batch([a, Image.fromarray(b), _ref(a)])
    torch.testing.assert_close(out, torch.cat([_ref(a), _ref(b), _ref(a)]), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"images: images must all have the same \(C, H, W\)"):
        to_batch([a, _rgb(7, 5)], argname="images")
    with pytest.raises(ValueError, match="images is an empty list"):
        to_batch([], argname="images")
    with pytest.raises(TypeError, match=r"images\[1\] must be a tensor"):
        to_batch([a, 3], argname="images")


def test_transform_sees_each_raw_image_but_not_tensors():
    seen = []

    def transform(img):
        seen.append(type(img).__name__)
        return torch.full((3, 8, 8), 0.5)

    out = to_batch([Image.new("RGB", (4, 4)), np.zeros((4, 4, 3), np.uint8), torch.zeros(3, 8, 8)],
                   transform=transform)
    assert seen == ["Image", "ndarray"]
    torch.testing.assert_close(out, torch.stack([torch.full((3, 8, 8), 0.5)] * 2 + [torch.zeros(3, 8, 8)]))


def test_size_resizes_raw_images_like_pillow(tmp_path):
    arr = _rgb(12, 10)
    expected = _ref(np.asarray(Image.fromarray(arr).resize((4, 6), Image.BILINEAR)))
    torch.testing.assert_close(to_batch(Image.fromarray(arr), size=(6, 4)), expected, rtol=0, atol=0)
    path = tmp_path / "b.png"
    Image.fromarray(arr).save(path)
    torch.testing.assert_close(to_batch(path, size=(6, 4)), expected, rtol=0, atol=0)
    assert to_batch(arr, size=5).shape == (1, 3, 5, 5)
    x = torch.rand(1, 3, 12, 10)
    assert to_batch(x, size=(6, 4)) is x  # tensors are taken as preprocessed
    with pytest.raises(TypeError, match="size must be"):
        to_batch(arr, size="big")


def test_dtype_and_device():
    out = to_batch(_rgb(), dtype=torch.float64, device="cpu")
    assert out.dtype == torch.float64 and out.device.type == "cpu"
    torch.testing.assert_close(out, _ref(_rgb()).double())


def test_errors_name_the_argument(tmp_path):
    with pytest.raises(ValueError, match=r"img must be \(N, C, H, W\)"):
        to_batch(torch.zeros(1, 1, 1, 2, 2), argname="img")
    with pytest.raises(ValueError, match="img is an empty batch"):
        to_batch(torch.zeros(0, 3, 2, 2), argname="img")
    with pytest.raises(TypeError, match="img must be a tensor"):
        to_batch({"a": 1}, argname="img")
    with pytest.raises(ValueError, match="img=.*missing.png.*no such image file"):
        to_batch(tmp_path / "missing.png", argname="img")


def test_load_and_save_round_trip(tmp_path):
    arr = _rgb(7, 9)
    path = tmp_path / "deep" / "er" / "a.png"
    save_image(_ref(arr)[0], path)  # creates the folders
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGB" and np.array_equal(np.asarray(im), arr)
    x = load_image(path)
    torch.testing.assert_close(x, _ref(arr)[0], rtol=0, atol=0)
    grey = load_image(path, mode="L", size=(4, 5))
    with Image.open(path) as im:
        expected = _ref(np.asarray(im.convert("L").resize((5, 4), Image.BILINEAR)))[0]
    torch.testing.assert_close(grey, expected, rtol=0, atol=0)
    save_image(grey[0], tmp_path / "g.png")  # (H, W)
    with Image.open(tmp_path / "g.png") as im:
        assert im.mode == "L" and im.size == (5, 4)
    torch.testing.assert_close(load_image(tmp_path / "g.png"), grey, rtol=0, atol=0)  # grey files stay grey


def test_save_clips_and_rounds(tmp_path):
    t = torch.tensor([[[-0.5, 0.2, 0.5 / 255 + 1e-4, 2.0]]])
    save_image(t, tmp_path / "c.png")
    with Image.open(tmp_path / "c.png") as im:
        assert np.asarray(im).tolist() == [[0, 51, 1, 255]]


def test_load_and_save_errors(tmp_path):
    with pytest.raises(ValueError, match="missing.png"):
        load_image(tmp_path / "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.png.*could not be read as an image"):
        load_image(bad)
    with pytest.raises(ValueError, match="mode"):
        load_image(bad, mode="CMYK")
    with pytest.raises(ValueError, match="C = 1 or 3"):
        save_image(torch.zeros(2, 4, 4), tmp_path / "x.png")
    with pytest.raises(TypeError, match="image must be a torch.Tensor"):
        save_image(np.zeros((4, 4)), tmp_path / "x.png")


def test_listing_images(tmp_path):
    for name in ("b.PNG", "a.jpg", "notes.txt", "c.webp"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "d.png").mkdir()  # a folder is not an image file
    assert list_images(tmp_path) == [tmp_path / "a.jpg", tmp_path / "b.PNG", tmp_path / "c.webp"]
    assert is_image_file(tmp_path / "b.PNG") and not is_image_file(tmp_path / "notes.txt")
    assert not is_image_file(tmp_path / "missing.png")
    assert ".png" in IMAGE_SUFFIXES and all(s == s.lower() for s in IMAGE_SUFFIXES)
    with pytest.raises(ValueError, match="folder=.*not a folder"):
        list_images(tmp_path / "notes.txt")


def test_tensor_inputs_do_not_import_pillow():
    code = ("import sys, torch; from cnn_explain.images import to_batch; to_batch(torch.zeros(3, 4, 4));"
            "print('PIL' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parent.parent).stdout.strip()
    assert out == "False"
