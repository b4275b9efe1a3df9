"""A command line that guides: --model file.py:factory from anywhere, sys.path left alone, the input size the
model expects, images of different sizes, random weights, --classes counted, --target by name."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from cnn_explain.cli import load_model, main

NETS = textwrap.dedent('''
    import torch
    from torch import nn
    from helper_layers import Head          # a module beside this file

    def small_cnn():
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             Head(4, 3))

    def fixed():                            # the same weights whatever the seed
        m = small_cnn()
        for p in m.parameters():
            torch.nn.init.constant_(p, 0.01)
        return m
''')
HELPER = "from torch import nn\n\n\nclass Head(nn.Linear):\n    pass\n"


@pytest.fixture()
def project(tmp_path):
    proj = tmp_path / "proj" / "models"
    proj.mkdir(parents=True)
    (proj / "my_nets.py").write_text(NETS)
    (proj / "helper_layers.py").write_text(HELPER)
    rng = np.random.default_rng(0)
    for name, side in (("a.png", 20), ("b.png", 20), ("big.png", 24), ("digit32.png", 32), ("photo.png", 300)):
        Image.fromarray((rng.random((side, side, 3)) * 255).astype(np.uint8)).save(tmp_path / name)
    (tmp_path / "names3.txt").write_text("cat\ndog\ntruck\n")
    (tmp_path / "names2.txt").write_text("cat\ndog\n")
    return tmp_path


def _err(capsys) -> str:
    return capsys.readouterr().err


def test_model_from_a_file_from_another_folder(project, monkeypatch, capsys):
    elsewhere = project / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path_before, modules_before = list(sys.path), set(sys.modules)
    model = load_model("../proj/models/my_nets.py:small_cnn")
    assert type(model[-1]).__name__ == "Head" and not model.training
    assert sys.path == path_before  # the file's folder was on it only while it ran
    assert "my_nets" in sys.modules and "helper_layers" in set(sys.modules) - modules_before
    out = project / "f.png"
    assert main(["saliency", "--model", "../proj/models/my_nets.py:small_cnn", "--images", "../a.png",
                 "--out", str(out), "--quiet"]) == 0 and out.is_file()
    assert main(["summary", "--model", "../proj/models/nope.py:small_cnn"]) == 2
    assert "no such Python file: ../proj/models/nope.py" in _err(capsys)


def test_module_factory_from_the_current_folder_leaves_sys_path_alone(project, monkeypatch, capsys):
    monkeypatch.chdir(project / "proj" / "models")
    path_before = list(sys.path)
    for name in ("my_nets", "helper_layers"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert type(load_model("my_nets:small_cnn")).__name__ == "Sequential"
    assert sys.path == path_before
    monkeypatch.chdir(project)
    assert main(["summary", "--model", "no_such_nets:small_cnn", "--input-shape", "3,8,8"]) == 2
    err = _err(capsys).splitlines()[-1]
    assert "cannot import module 'no_such_nets'" in err and "current folder" in err and "PYTHONPATH" in err


def test_random_weights_get_a_one_line_notice(project, monkeypatch, capsys):
    monkeypatch.chdir(project / "proj" / "models")
    state = torch.random.get_rng_state()
    a, b = load_model("my_nets:small_cnn"), load_model("my_nets:small_cnn")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))  # seeded
    assert torch.equal(state, torch.random.get_rng_state())  # the global random state is left alone
    notes = [ln for ln in _err(capsys).splitlines() if "random weights" in ln]
    assert len(notes) == 2 and "--weights" in notes[0]
    load_model("my_nets:fixed")
    assert "random weights" not in _err(capsys)
    ckpt = project / "w.pt"
    torch.save(a.state_dict(), ckpt)
    load_model("my_nets:small_cnn", str(ckpt))
    assert "random weights" not in _err(capsys)


def test_the_size_the_model_expects(project, capsys):
    argv = ["saliency", "--model", "cnn_explain.models:mnist_cnn", "--images", str(project / "digit32.png"),
            "--out", str(project / "s.png")]
    assert main(argv) == 2
    err = _err(capsys).splitlines()[-1]
    assert "the model expects 28×28; pass --input-size 28" in err and "32×32" in err
    assert main([*argv, "--input-size", "28", "--quiet"]) == 0


def test_images_of_different_sizes_suggest_input_size(project, capsys):
    argv = ["saliency", "--model", "cnn_explain.models:tiny_vgg", "--images", str(project / "a.png"),
            str(project / "big.png"), "--out", str(project / "s.png")]
    assert main(argv) == 2
    err = _err(capsys).splitlines()[-1]
    assert "different sizes" in err and "a.png 20×20" in err and "big.png 24×24" in err and "--input-size" in err
    assert "torch.cat" not in err and "Sizes of tensors" not in err
    assert main([*argv, "--input-size", "16", "--quiet"]) == 0


def test_a_large_photo_kept_at_full_size_is_noted(project, monkeypatch, capsys):
    monkeypatch.chdir(project / "proj" / "models")
    assert main(["saliency", "--model", "my_nets:small_cnn", "--images", str(project / "photo.png"),
                 "--out", str(project / "s.png"), "--quiet"]) == 0
    notes = [ln for ln in _err(capsys).splitlines() if "300×300" in ln]
    assert len(notes) == 1 and "--input-size" in notes[0]


def test_classes_must_match_the_outputs_and_target_takes_a_name(project, monkeypatch, capsys):
    monkeypatch.chdir(project / "proj" / "models")
    base = ["saliency", "--model", "my_nets:small_cnn", "--images", str(project / "a.png"), "--method", "gradient",
            "--quiet"]
    assert main([*base, "--classes", str(project / "names2.txt"), "--out", str(project / "x.png")]) == 2
    assert "has 2 names but the model has 3 outputs" in _err(capsys)
    by_name, by_index = project / "by_name.png", project / "by_index.png"
    assert main([*base, "--classes", str(project / "names3.txt"), "--target", "truck", "--out", str(by_name)]) == 0
    assert main([*base, "--classes", str(project / "names3.txt"), "--target", "2", "--out", str(by_index)]) == 0
    assert by_name.read_bytes() == by_index.read_bytes()
    assert main([*base, "--classes", str(project / "names3.txt"), "--target", "truk", "--out", str(by_name)]) == 2
    assert "--target 'truk' is not a class name (cat, dog, truck)" in _err(capsys)
    assert main([*base, "--target", "truck", "--out", str(by_name)]) == 2
    assert "needs --classes" in _err(capsys)


def test_a_data_folder_of_different_sizes_suggests_input_size(project, capsys):
    for cls, side in (("a", 20), ("b", 24)):
        (project / "data" / cls).mkdir(parents=True)
        Image.fromarray(np.zeros((side, side, 3), np.uint8)).save(project / "data" / cls / "0.png")
    argv = ["embed", "--model", "cnn_explain.models:tiny_vgg", "--data", str(project / "data"), "--method", "pca",
            "--out", str(project / "e.png"), "--quiet"]
    assert main(argv) == 2
    err = _err(capsys).splitlines()[-1]
    assert "--data: the images have different sizes (0.png 20×20, 0.png 24×24)" in err and "--input-size" in err
