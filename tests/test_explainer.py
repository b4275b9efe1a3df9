"""The façade: explain(), input conversion, predict()."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from PIL import Image

from cnn_explain import Explainer, explain
from cnn_explain._utils import resolve_target
from cnn_explain.images import to_batch


def test_predict_topk_matches_manual_softmax(tiny_net, images, snapshot):
    m = tiny_net.train()  # predict must use eval mode and restore train mode
    snap = snapshot(m)
    names = ["a", "b", "c", "d", "e"]
    p = explain(m, class_names=names).predict(images, k=3)
    with torch.no_grad():
        probs = m.eval()(images).softmax(1)
    m.train()
    top = probs.topk(3, dim=1)
    assert torch.equal(p.indices, top.indices)
    torch.testing.assert_close(p.probs, top.values)
    assert p.labels[0] == [names[i] for i in top.indices[0].tolist()]
    assert "image 0:" in str(p)
    snap.assert_unchanged()


def test_k_larger_than_classes_is_clamped(tiny_net, images):
    assert explain(tiny_net).predict(images, k=50).indices.shape == (3, 5)


def test_input_conversions_agree():
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
    ref = torch.from_numpy(hwc.astype(np.float32) / 255).permute(2, 0, 1)[None]
    torch.testing.assert_close(to_batch(hwc), ref)
    torch.testing.assert_close(to_batch(Image.fromarray(hwc)), ref)
    torch.testing.assert_close(to_batch(ref[0]), ref)
    gray = rng.integers(0, 256, size=(6, 5), dtype=np.uint8)
    assert to_batch(Image.fromarray(gray)).shape == (1, 1, 6, 5)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        to_batch(torch.zeros(1, 1, 1, 2, 2))
    with pytest.raises(ValueError, match="x='image.png': no such image file"):
        to_batch("image.png")
    with pytest.raises(TypeError, match="x must be"):
        to_batch(b"image.png")


def test_bad_inputs_are_named(tiny_net):
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        explain(lambda x: x)  # type: ignore[arg-type]
    ex = explain(tiny_net)
    with pytest.raises(ValueError, match="x has 1 channels .* expects 3"):
        ex.predict(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="k must be >= 1"):
        ex.predict(torch.zeros(1, 3, 8, 8), k=0)
    with pytest.raises(TypeError, match="class_names"):
        explain(tiny_net, class_names="cat")


def test_transform_applies_to_raw_images(tiny_net):
    seen = []

    def transform(img):
        seen.append(type(img).__name__)
        return torch.zeros(3, 8, 8)

    ex = explain(tiny_net, transform=transform)
    x = ex.prepare([Image.new("RGB", (4, 4)), Image.new("RGB", (4, 4))])
    assert x.shape == (2, 3, 8, 8) and seen == ["Image", "Image"]
    assert isinstance(ex, Explainer) and "TinyNet" in repr(ex)


def test_resolve_target_rules():
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 0.0]])
    assert resolve_target(None, logits).tolist() == [1, 0]
    assert resolve_target(2, logits).tolist() == [2, 2]
    assert resolve_target([0, 2], logits).tolist() == [0, 2]
    with pytest.raises(ValueError, match="outside"):
        resolve_target(3, logits)
    with pytest.raises(ValueError, match="one class per image"):
        resolve_target([1], logits)
    with pytest.raises(TypeError, match="target"):
        resolve_target("cat", logits)


def test_import_is_light():
    """`import cnn_explain` must not load matplotlib, scikit-learn, umap or captum."""
    import subprocess
    import sys

    code = (
        "import sys, cnn_explain, cnn_explain.attribution, cnn_explain.features, cnn_explain.plotting;"
        "heavy=[m for m in sys.modules if m.split('.')[0] in ('matplotlib','sklearn','umap','captum','numba')];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"heavy modules imported: {out}"


def test_package_names_are_the_functions():
    """`from cnn_explain.attribution import occlusion` gives the function even if the module loaded first."""
    import importlib

    importlib.import_module("cnn_explain.attribution.occlude.api")
    importlib.import_module("cnn_explain.features.filters")
    from cnn_explain.attribution import grad_cam, occlusion, saliency, sanity_check
    from cnn_explain.features import arithmetic, feature_maps, filters, maximize

    for f in (occlusion, saliency, grad_cam, sanity_check, arithmetic, feature_maps, filters, maximize):
        assert callable(f) and type(f).__name__ == "function", f


def _facade_functions():
    from cnn_explain.attribution import grad_cam, occlusion, saliency, sanity_check
    from cnn_explain.attribution.cam_family import cam
    from cnn_explain.attribution.integrated_gradients import integrated_gradients
    from cnn_explain.embedding import embed, extract, project
    from cnn_explain.features import arithmetic, feature_maps, filters, maximize
    from cnn_explain.layers import receptive_field
    from cnn_explain.report import write_report
    from cnn_explain.summary import summarize

    return {"summary": [summarize], "feature_maps": [feature_maps], "filters": [filters], "maximize": [maximize],
            "arithmetic": [arithmetic], "receptive_field": [receptive_field], "occlusion": [occlusion],
            "saliency": [saliency], "grad_cam": [grad_cam], "sanity_check": [sanity_check],
            "integrated_gradients": [integrated_gradients], "cam": [cam],
            "embed": [embed, extract, project], "report": [write_report]}


def test_every_facade_method_is_checked_against_its_function():
    """Each public method but ``predict`` (no function: its reference is in test_contract) has its function listed,
    so the defaults test below covers it."""
    public = {n for n, v in vars(Explainer).items() if callable(v) and not n.startswith("_")}
    assert public - {"prepare", "label", "predict"} == set(_facade_functions())


def test_facade_signatures_are_explicit_and_keep_the_functions_defaults():
    import inspect

    functions = _facade_functions()
    for name, method in vars(Explainer).items():
        if name.startswith("_") or not callable(method):
            continue
        sig = inspect.signature(method)
        kinds = {p.kind for p in sig.parameters.values()}
        assert inspect.Parameter.VAR_KEYWORD not in kinds and inspect.Parameter.VAR_POSITIONAL not in kinds, name
        assert sig.return_annotation is not inspect.Signature.empty, f"{name} has no return type"
        seen: set[str] = set()  # embed's own defaults come first; extract/project fill in its **options
        for fn in functions.get(name, []):
            for p in inspect.signature(fn).parameters.values():
                if p.name in seen:
                    continue
                seen.add(p.name)
                mine = sig.parameters.get(p.name)
                if mine is not None and p.default is not p.empty and mine.default is not mine.empty:
                    assert mine.default == p.default, f"Explainer.{name}({p.name}={mine.default!r}) but " \
                                                      f"{fn.__name__} defaults to {p.default!r}"
    assert inspect.signature(Explainer.saliency).parameters["method"].default == "gradient"
    ig, cam = inspect.signature(Explainer.integrated_gradients), inspect.signature(Explainer.cam)
    assert (ig.parameters["steps"].default, ig.parameters["method"].default, ig.parameters["exact"].default) == \
        (64, "gausslegendre", False)
    assert (cam.parameters["method"].default, cam.parameters["batch_size"].default) == ("grad-cam", 64)


def test_class_names_as_targets_for_ig_and_cam(tiny_net, images):
    """``target="c"`` is class 2 for the new methods too, as for saliency / grad_cam."""
    from cnn_explain.attribution.cam_family import cam
    from cnn_explain.attribution.integrated_gradients import integrated_gradients

    ex = explain(tiny_net, class_names=list("abcde"))
    r = ex.integrated_gradients(images, target="c", steps=4, progress=False)
    ref = integrated_gradients(tiny_net, images, target=2, steps=4, progress=False)
    assert r.target.tolist() == [2, 2, 2]
    torch.testing.assert_close(r.attribution, ref.attribution, rtol=0, atol=0)
    c = ex.cam(images, target=["a", 4, "b"], method="grad-cam++", layer="conv2")
    ref = cam(tiny_net, images, target=[0, 4, 1], method="grad-cam++", layer="conv2")
    assert c.target.tolist() == [0, 4, 1] and c.layer == "conv2"
    torch.testing.assert_close(c.attribution, ref.attribution, rtol=0, atol=0)
    with pytest.raises(ValueError, match="did you mean 'c'"):
        ex.cam(images, target="cc")


def test_facade_passes_its_output_selector_on():
    """A model returning a dict: every capability that selects the score tensor gets ``output`` from the façade."""
    import inspect

    from conftest import TinyNet, _seeded

    class DictNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = _seeded(TinyNet)

        def forward(self, x):
            return {"aux": x.mean(), "logits": self.net(x)}

    for name, fns in _facade_functions().items():
        if name != "report" and any("output" in inspect.signature(fn).parameters for fn in fns):
            source = inspect.getsource(getattr(Explainer, name))
            assert "output=self.output" in source, f"Explainer.{name} does not pass output on"
    ex = explain(DictNet(), output="logits")
    x = torch.rand(2, 3, 12, 10, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = ex.model(x)["logits"]
    assert ex.grad_cam(x).target.tolist() == logits.argmax(1).tolist()
    assert ex.predict(x, k=1).indices[:, 0].tolist() == logits.argmax(1).tolist()
    assert set(ex.feature_maps(x, layers="net.conv1")) == {"net.conv1"}
