"""``cnn-explain batch``: the thin wrapper over :func:`cnn_explain.batch.explain_dataset`."""

from __future__ import annotations

import numpy as np
import pytest

from cnn_explain.batch import read_results
from cnn_explain.cli import main
from cnn_explain.images import save_image


FACTORY = """
import torch
from torch import nn


def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))
"""


@pytest.fixture
def factory(tmp_path):
    path = tmp_path / "mynet.py"
    path.write_text(FACTORY)
    return f"{path}:build"


@pytest.fixture
def folder(tmp_path):
    g = np.random.default_rng(0)
    import torch

    for i in range(6):
        cls = tmp_path / "imgs" / ("a" if i % 2 else "b")
        cls.mkdir(parents=True, exist_ok=True)
        save_image(torch.from_numpy(g.random((8, 8), dtype=np.float32)), cls / f"{i}.png")
    return tmp_path / "imgs"


def test_batch_command_writes_the_rows_explain_dataset_writes(folder, factory, tmp_path, capsys):
    from cnn_explain.batch import explain_dataset

    rc = main(["batch", "--model", factory, "--data", str(folder), "--out", str(tmp_path / "cli"),
               "--methods", "grad-cam,saliency", "--option", "grad_cam.layer=2", "--quiet",
               "--figures", str(tmp_path / "figs")])
    assert rc == 0
    assert "6 rows" in capsys.readouterr().out
    direct = explain_dataset(factory, str(folder), methods=("grad_cam", "saliency"),
                             out=tmp_path / "direct", progress=False, grad_cam={"layer": "2"})
    a, b = read_results(tmp_path / "cli"), read_results(direct.out)
    assert list(a["id"]) == list(b["id"]) and len(a) == 6
    for col in ("grad_cam_map", "saliency_map"):
        np.testing.assert_array_equal(np.stack(a[col]), np.stack(b[col]))
    assert sorted(p.name for p in (tmp_path / "figs").glob("*.png"))


def test_batch_command_refuses_a_bad_target(folder, tmp_path, capsys):
    assert main(["batch", "--data", str(folder), "--out", str(tmp_path / "r"), "--target", "cat"]) == 2
    assert "--target" in capsys.readouterr().err
