"""The receptive-field figure draws the inclusive box from layers.receptive_field on the image."""

from __future__ import annotations

import pytest
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


def _resolved_hints(module_name: str) -> dict[str, dict]:
    """``typing.get_type_hints`` of every function of a module, with its ``TYPE_CHECKING`` imports made."""
    import ast
    import importlib
    import inspect
    import typing

    module = importlib.import_module(module_name)
    namespace = dict(vars(module))
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            exec(compile(ast.Module(body=node.body, type_ignores=[]), module.__file__, "exec"), namespace)
    hints = {}
    for name, fn in vars(module).items():
        if inspect.isfunction(fn) and fn.__module__ == module.__name__:
            hints[name] = typing.get_type_hints(fn, globalns=namespace)
    for cls in [c for c in vars(module).values() if inspect.isclass(c) and c.__module__ == module.__name__]:
        for name, fn in vars(cls).items():
            if inspect.isfunction(fn):
                hints[f"{cls.__name__}.{name}"] = typing.get_type_hints(fn, globalns=namespace)
    return hints


@pytest.mark.parametrize("module", ["cnn_explain.plotting._base", "cnn_explain.plotting.attribution",
                                    "cnn_explain.plotting.embedding", "cnn_explain.plotting.features",
                                    "cnn_explain.plotting.style", "cnn_explain.plotting.summary",
                                    "cnn_explain.explainer"])
def test_annotations_name_real_result_classes(module):
    """The result-class annotations (imported only for type checkers) resolve to real classes."""
    from matplotlib.figure import Figure

    hints = _resolved_hints(module)
    if module.startswith("cnn_explain.plotting.") and not module.endswith("_base"):
        public = [n for n in hints if not n.startswith("_") and "." not in n and n not in ("map_norm", "class_colors",
                                                                                            "spread_subsample")]
        assert public and all(hints[n].get("return") is Figure for n in public), {n: hints[n].get("return") for n in public}
