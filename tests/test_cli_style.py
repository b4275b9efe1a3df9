"""``cnn-explain style --model``: style transfer on the user's own CNN, with Gatys-like default layers."""

from __future__ import annotations

from torch import nn

from cnn_explain.cli import main
from cnn_explain.models import RandomTextureNet
from cnn_explain.style.transfer import _default_layers

FACTORY = """
import torch
from torch import nn


def build():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(16, 4))
"""


def test_default_layers_of_any_cnn_follow_gatys():
    convs = [nn.Conv2d(3, 3, 3) for _ in range(16)]  # VGG-19 has 16 convolutions
    model = nn.Sequential(*convs)
    content, style = _default_layers(model, RandomTextureNet)
    assert content == ["9"]  # conv4_2 is VGG-19's 10th convolution: index 9 = round(0.6 * 15)
    assert style == ["0", "4", "8", "11", "15"]  # first to last, evenly spread
    assert _default_layers(nn.Sequential(nn.Linear(2, 2)), RandomTextureNet) == (None, None)


def test_style_command_runs_on_a_users_model(tmp_path, capsys):
    path = tmp_path / "mynet.py"
    path.write_text(FACTORY)
    out = tmp_path / "stylized.png"
    rc = main(["style", "--model", f"{path}:build", "--size", "32", "--steps", "5", "--out", str(out), "--quiet"])
    assert rc == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    line = capsys.readouterr().out
    drop = float(line.split("the style (Gram) loss is ")[1].split("x")[0])
    assert drop > 1  # the style moved towards the style image's


def test_weights_without_model_is_a_usage_error(tmp_path, capsys):
    assert main(["style", "--size", "32", "--steps", "1", "--weights", "x.pt", "--out", str(tmp_path / "o.png")]) == 2
    assert "--weights needs --model" in capsys.readouterr().err
