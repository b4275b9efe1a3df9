"""The receptive-field figure draws the inclusive box from layers.receptive_field on the image."""

from __future__ import annotations

import torch
from torch import nn

from cnn_explain.layers import receptive_field
from cnn_explain.plotting.features import receptive_field_figure


def _rects(fig):
    from matplotlib.patches import Rectangle

    return [p for ax in fig.axes for p in ax.patches if isinstance(p, Rectangle)]


def test_box_drawn_inclusive_and_padding_visible():
    net = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(1, 1, 3, padding=1))
    image = torch.rand(1, 8, 8)
    box = receptive_field(net, "2", 0, 0, input_shape=(1, 8, 8))
    fig = receptive_field_figure(image, box)
    rect = _rects(fig)[0]
    assert rect.get_xy() == (box.left - 0.5, box.top - 0.5)
    assert (rect.get_width(), rect.get_height()) == (box.right - box.left + 1, box.bottom - box.top + 1)
    ax = fig.axes[0]
    assert box.top < 0 and ax.get_xlim()[0] <= box.left - 0.5 and ax.get_ylim()[1] <= box.top - 0.5
    assert torch.allclose(torch.as_tensor(ax.images[0].get_array()), image[0])


def test_given_axes_and_rgb():
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot(1, 2, 2)
    box = type("B", (), dict(top=2, bottom=4, left=1, right=5))()
    assert receptive_field_figure(torch.rand(1, 3, 6, 7), box, ax=ax) is fig
    assert ax.images[0].get_array().shape == (6, 7, 3)
