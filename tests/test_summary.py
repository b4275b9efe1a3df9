"""summarize(): seed 000's parameter table and seed 001's neuron counts, computed from the models."""

from __future__ import annotations

import json
import math

import pytest
from torch import nn

from cnn_explain import explain
from cnn_explain.models import cifar10_cnn, mnist_cnn
from cnn_explain.summary import param_formula, summarize
from conftest import TinyFunctionalNet, TinyResNet, _seeded

# Seed 000, section "Cantidad de parámetros a entrenar" (written there with x and without separators).
SEED_000 = [
    ("Conv2d", "(3×3×3+1)×32 = 896", 896, "32×32×32"),
    ("Conv2d", "(3×3×32+1)×32 = 9,248", 9248, "32×32×32"),
    ("MaxPool2d", "—", 0, "16×16×32"),
    ("Conv2d", "(3×3×32+1)×64 = 18,496", 18496, "16×16×64"),
    ("Conv2d", "(3×3×64+1)×64 = 36,928", 36928, "16×16×64"),
    ("MaxPool2d", "—", 0, "8×8×64"),
    ("Conv2d", "(3×3×64+1)×128 = 73,856", 73856, "8×8×128"),
    ("Conv2d", "(3×3×128+1)×128 = 147,584", 147584, "8×8×128"),
    ("MaxPool2d", "—", 0, "4×4×128"),
    ("Flatten", "—", 0, "2048"),
    ("Linear", "(2048+1)×128 = 262,272", 262272, "128"),
    ("Linear", "(128+1)×10 = 1,290", 1290, "10"),
]


def test_cifar10_reproduces_seed_000_table():
    s = summarize(cifar10_cnn(), (3, 32, 32))
    rows = [r for r in s.rows if r.kind != "ReLU"]  # Keras folds the activations into the layers
    assert [(r.kind, r.formula, r.params, r.shape) for r in rows] == SEED_000
    assert s.total_params == s.trainable_params == 550_570 == sum(r.params for r in s.rows)
    flatten = next(r for r in s.rows if r.kind == "Flatten")
    assert flatten.neurons == 2048 and flatten.output_shape == (2048,)
    text = str(s)
    for kind, formula, _, shape in SEED_000:
        assert formula in text and shape in text
    assert "Total params: 550,570" in text


def test_formulas_evaluate_to_the_real_counts():
    """Each written formula, evaluated, equals the layer's parameter count."""
    for r in summarize(cifar10_cnn(), (3, 32, 32)).rows:
        if r.formula != "—":
            expr, total = r.formula.split(" = ")
            assert eval(expr.replace("×", "*")) == int(total.replace(",", "")) == r.params  # noqa: S307


def test_mnist_neurons_as_seed_001_counts_them():
    s = summarize(mnist_cnn(), (1, 28, 28))
    first = s.rows[0]
    assert (first.shape, first.neurons) == ("28×28×32", 25_088) and "25,088" in str(s)
    pools = [r for r in s.rows if r.kind == "MaxPool2d"]
    assert [(r.shape, r.neurons) for r in pools] == [("14×14×32", 6272), ("7×7×64", 3136), ("3×3×128", 1152)]
    assert next(r for r in s.rows if r.kind == "Flatten").neurons == 1152
    assert s.input_neurons == 784 and "28×28×1 = 784" in str(s)
    assert all(r.neurons == math.prod(r.output_shape) for r in s.rows)


@pytest.mark.parametrize(
    "module, formula",
    [
        (nn.Conv2d(3, 32, 3, bias=False), "3×3×3×32 = 864"),
        (nn.Conv2d(4, 8, 3, groups=2), "(3×3×2+1)×8 = 152"),
        (nn.Conv2d(4, 4, (5, 3), groups=4, bias=False), "5×3×1×4 = 60"),
        (nn.ConvTranspose2d(4, 6, 2, groups=2), "(2×2×2+1)×6 = 54"),
        (nn.Linear(10, 3, bias=False), "10×3 = 30"),
        (nn.BatchNorm2d(16), "2×16 = 32"),
        (nn.BatchNorm2d(16, affine=False), "—"),
        (nn.PReLU(4), "4 = 4"),
        (nn.LayerNorm([4, 2, 2]), "4×2×2 + 4×2×2 = 32"),
        (nn.ReLU(), "—"),
    ],
)
def test_param_formula(module, formula):
    assert param_formula(module) == formula
    count = sum(p.numel() for p in module.parameters())
    assert formula == "—" if count == 0 else int(formula.split(" = ")[-1].replace(",", "")) == count


def test_residual_net_with_reused_inplace_relu_and_non_square_input(snapshot):
    model = _seeded(TinyResNet)
    snap = snapshot(model)
    s = summarize(model, (3, 20, 14))
    snap.assert_unchanged()
    by = {r.name: r for r in s.rows}
    assert by["layer1.relu"].shape == "20×14×8" and "layer1.relu#1" in by
    assert by["layer2.conv1"].output_shape == (16, 10, 7) and by["layer2.downsample.0"].output_shape == (16, 10, 7)
    assert by["gap"].shape == "1×1×16" and by["fc"].params == 85 and by["bn"].formula == "2×8 = 16"
    assert s.total_params == sum(p.numel() for p in model.parameters()) == sum(r.params for r in s.rows)
    assert by["layer2.relu#1"].rf == (13, 13)


def test_functional_relu_net():
    s = summarize(_seeded(TinyFunctionalNet), (3, 12, 10))
    assert [r.name for r in s.rows] == ["conv1", "pool", "conv2", "gap", "fc"]
    assert [r.output_shape for r in s.rows] == [(4, 12, 10), (4, 6, 5), (6, 4, 3), (6, 1, 1), (5,)]


class Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.add_module("<b>odd</b>", nn.Identity())

    def forward(self, x):
        return getattr(self, "<b>odd</b>")(self.conv(self.conv(x)))


def test_shared_module_counted_once_and_html_escaped():
    s = summarize(Shared(), (2, 5, 5))
    assert [r.name for r in s.rows] == ["conv", "conv#1", "<b>odd</b>"]
    assert [r.params for r in s.rows] == [38, 0, 0] and s.total_params == 38
    assert s.rows[1].formula == "shared with conv" and s.rows[1].macs == s.rows[0].macs
    page = s._repr_html_()
    assert "&lt;b&gt;odd&lt;/b&gt;" in page and "<b>odd" not in page and page.count("<tr>") == 4


def test_to_dict_is_json():
    s = summarize(mnist_cnn(), (1, 28, 28))
    d = json.loads(json.dumps(s.to_dict()))
    assert d["total_params"] == s.total_params and d["rows"][0]["output_shape"] == [32, 28, 28]
    assert d["rows"][0]["formula"] == "(3×3×1+1)×32 = 320"


def test_text_table_is_aligned():
    lines = str(summarize(cifar10_cnn(), (3, 32, 32))).splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("Layer"))
    col = lines[header].index("Formula")
    body = lines[header + 2: header + 2 + 19]
    assert all(line[col - 2: col] == "  " and line[col] != " " for line in body)


def test_explainer_facade_and_bad_input(snapshot):
    model = cifar10_cnn()
    assert explain(model).summary((3, 32, 32)).total_params == 550_570
    snap = snapshot(model)
    with pytest.raises(ValueError, match=r"\(C, H, W\).*leave out the batch dimension"):
        summarize(model, (1, 3, 32, 32))
    with pytest.raises(ValueError, match="input_shape"):
        summarize(model, (1, 32, 32))  # wrong channel count: forward fails
    with pytest.raises(ValueError, match=r"input_shape\[1\] must be >= 1"):
        summarize(model, (3, 0, 32))
    snap.assert_unchanged()


def test_architecture_figure():
    from matplotlib.figure import Figure

    from cnn_explain.plotting import architecture

    s = summarize(cifar10_cnn(), (3, 32, 32))
    fig = architecture(s)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    shown = [r for i, r in enumerate(s.rows) if r.params or i == 0 or r.output_shape != s.rows[i - 1].output_shape]
    assert [b.get_width() for b in ax.containers[0]] == [r.neurons for r in shown]
    assert [b.get_width() for b in ax.containers[1]] == [r.params for r in shown]
    fig.savefig(__import__("io").BytesIO(), format="png")  # renders with zero-parameter bars on a log axis


class TiedAndUnused(nn.Module):
    """Two convs sharing one weight tensor, and a head the forward never calls."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 2, 3, padding=1)
        self.b = nn.Conv2d(2, 2, 3, padding=1, bias=False)
        self.b.weight = self.a.weight
        self.unused = nn.Linear(3, 4)

    def forward(self, x):
        return self.b(self.a(x))


def test_tied_weights_and_uncalled_modules_keep_the_column_summing_to_the_total():
    s = summarize(TiedAndUnused(), (2, 5, 5))
    by = {r.name: r for r in s.rows}
    assert (by["a"].params, by["b"].params, by["unused"].params) == (38, 0, 16)
    assert by["b"].formula == "shared with a" and by["unused"].shape == "not called" and by["unused"].macs == 0
    assert sum(r.params for r in s.rows) == s.total_params == 38 + 16
    assert by["a"].macs == by["b"].macs == 5 * 5 * 2 * 2 * 9 and s.total_macs == 2 * by["a"].macs
