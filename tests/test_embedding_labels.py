"""Embedding labels: a data set's own classes label the legend, matched to the model's classes by name."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnn_explain.embedding import embed
from cnn_explain.models import mnist_cnn


# --------------------------------------------------------------------------- labels of a data set with its own classes
TEN = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _folder(tmp_path, names=("cat", "dog", "truck"), per=4):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in names:
        (tmp_path / name).mkdir()
        for k in range(per):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / name / f"{k}.png")
    from cnn_explain.data import ImageFolder

    return ImageFolder(tmp_path)


def _legend(fig) -> list[str]:
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_folder_classes_are_matched_to_the_model_by_name(tmp_path):
    from cnn_explain import explain
    from cnn_explain.models import cifar10_cnn
    from cnn_explain.plotting import scatter_embedding

    data = _folder(tmp_path)
    net = cifar10_cnn().eval()
    e = explain(net, class_names=TEN).embed(data, method="pca", progress=False)
    assert e.class_names == ("cat", "dog", "truck") and e.label_to_model == (3, 5, 9)
    with torch.no_grad():  # independent reference: the model's own predictions against the folders' classes
        x = torch.stack([data[i][0] for i in range(len(data))])
        pred = net(x).argmax(1).numpy()
    truth = np.array([3, 5, 9])[np.array(data.targets)]
    assert e.accuracy == pytest.approx(float((pred == truth).mean()))
    fig = scatter_embedding(e)
    assert _legend(fig)[:3] == ["cat", "dog", "truck"]
    assert "model accuracy" in fig.axes[0].get_title() and e.accuracy_note is None
    n_wrong = int((pred != truth).sum())
    assert any(t == f"misclassified ({n_wrong})" for t in _legend(fig)) or n_wrong == 0


def test_folder_classes_the_model_lacks_give_no_accuracy_and_say_why(tmp_path):
    from cnn_explain.embedding import embed as embed_fn
    from cnn_explain.models import cifar10_cnn
    from cnn_explain.plotting import scatter_embedding

    data = _folder(tmp_path, names=("cat", "dog", "zebra"))
    e = embed_fn(cifar10_cnn(), data, method="pca", class_names=TEN, progress=False)
    assert e.label_to_model == (3, 5, None) and e.accuracy is None and e.misclassified is None
    fig = scatter_embedding(e)
    legend, title = _legend(fig), fig.axes[0].get_title()
    assert legend == ["cat", "dog", "zebra"]  # the folders' names, no "plane, car, bird", no misclassified marks
    assert "model accuracy" not in title and "zebra not among the model's classes" in title
    # without the model's names the folders cannot be matched: said, not guessed
    e = embed_fn(cifar10_cnn(), data, method="pca", progress=False)
    assert e.accuracy is None and "class names are unknown" in e.accuracy_note


def test_tensor_labels_are_model_classes_and_keep_their_names():
    x, y = torch.rand(24, 1, 28, 28), torch.arange(24) % 3
    names = [f"d{i}" for i in range(10)]
    e = embed(mnist_cnn(), (x, y), method="pca", class_names=names, progress=False)
    assert e.label_to_model is None and e.class_names == tuple(names)
    assert e.accuracy == pytest.approx(float((e.predictions == y.numpy()).mean()))


def test_embed_states_how_the_projection_ran():
    """deterministic=True reaches project() through embed(), gives identical maps twice, and the result says so."""
    import numpy as np
    import torch

    from cnn_explain.data import load_digits
    from cnn_explain.embedding import embed
    from cnn_explain.models import mnist_cnn

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = mnist_cnn().eval()
    data = torch.utils.data.Subset(load_digits("test"), range(80))
    a, b = (embed(model, data, method="tsne", deterministic=True, perplexity=10, progress=False) for _ in range(2))
    assert a.deterministic and a.threads == 1
    np.testing.assert_array_equal(a.coords, b.coords)
