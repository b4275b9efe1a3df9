"""The HTML report: every section with real figures, manifest = summary, escaping, atomic writes."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import TensorDataset

from cnn_explain import explain
from cnn_explain.report import SECTIONS, write_report
from cnn_explain.summary import summarize

EVIL = '<script>alert("x")</script>'
TITLE = '<i>my</i> "report" & more'
TINY = dict(maximize_steps=3, maximize_channels=2, max_channels=4, occlusion_window=4, occlusion_stride=4,
            embed_methods=("pca", "tsne", "umap"),
            embed_options={"tsne": {"perplexity": 5.0}, "umap": {"n_neighbors": 5}})


def _tiny_net():
    from conftest import _seeded, TinyNet

    return _seeded(TinyNet)


def _data(n: int = 40) -> TensorDataset:
    g = torch.Generator().manual_seed(3)
    return TensorDataset(torch.rand(n, 3, 16, 16, generator=g), torch.arange(n) % 5)


def _style() -> dict:
    g = torch.Generator().manual_seed(4)
    return {"content": torch.rand(3, 24, 24, generator=g), "style": torch.rand(3, 24, 24, generator=g),
            "size": 32, "steps": 2}


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    """One report with every section (tiny model, data and style transfer), built once for this module."""
    from cnn_explain.hooks import hook_count

    folder = tmp_path_factory.mktemp("rep")
    model = _tiny_net()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    img = folder / "in<b>put\".png"
    Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)).save(img)
    names = [EVIL, "b", "c", "d", "e"]
    ex = explain(model, class_names=names)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    res = write_report(ex, [x, str(img)], data=_data(), out=folder / "report", progress=False,
                       style=_style(), title=TITLE, **TINY)
    assert hook_count(model) == 0 and all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    return res, model


@pytest.mark.slow
def test_every_section_has_real_figures(full_report):
    res, _ = full_report
    folder = res.path.parent
    sections = res.manifest["sections"]
    assert [s["key"] for s in sections] == list(SECTIONS)
    missing = {s["key"]: s["reason"] for s in sections if not s["included"]}
    assert not missing, f"sections left out: {missing}"
    with_figs = {f["section"] for f in res.manifest["figures"]}
    assert with_figs == set(SECTIONS), f"sections without a figure: {set(SECTIONS) - with_figs}"
    for rec in res.figures:
        with Image.open(folder / rec.file) as im:
            im.load()  # decodes the whole PNG
            assert im.format == "PNG" and im.size[0] > 20 and im.size[1] > 20
            assert len(np.unique(np.asarray(im.convert("L")))) > 1, f"{rec.file} is blank"
        if rec.svg:  # the SVG is kept only when it is the lighter file
            assert (folder / rec.svg).stat().st_size < (folder / rec.file).stat().st_size
    assert json.loads((folder / "manifest.json").read_text()) == res.manifest
    assert res.manifest["schema_version"] == 1


@pytest.mark.slow
def test_page_references_every_figure_and_needs_no_script(full_report):
    res, _ = full_report
    text = res.path.read_text(encoding="utf-8")
    parser = _Collect()
    parser.feed(text)
    srcs = [a["src"] for t, a in parser.tags if t == "img"]
    assert srcs == [f.file for f in res.figures]
    assert all((res.path.parent / s).is_file() for s in srcs)
    assert not any(t == "script" for t, _ in parser.tags)
    assert "<style>" in text and 'href="http' not in text and 'src="http' not in text
    sources = [a["srcset"] for t, a in parser.tags if t == "source"]
    assert sources == [f.svg for f in res.figures if f.svg]


@pytest.mark.slow
def test_user_strings_are_escaped(full_report):
    res, _ = full_report
    text = res.path.read_text(encoding="utf-8")
    assert "<script" not in text.lower() and "<i>" not in text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in text  # the class name, shown escaped
    assert "in&lt;b&gt;put&#34;.png" in text and "in<b>put" not in text  # the file name
    assert "&lt;i&gt;my&lt;/i&gt; &#34;report&#34; &amp; more" in text  # the title
    assert res.manifest["images"][-1] == 'in<b>put".png'
    parser = _Collect()
    parser.feed(text)
    shown = "".join(parser.text)
    # a reader sees each string verbatim, as text: in the title, the tables and the captions
    assert shown.count(TITLE) == 2 and EVIL in shown and 'in<b>put".png' in shown
    assert {t for t, _ in parser.tags} <= {"html", "head", "meta", "title", "style", "body", "header", "h1", "p",
                                           "nav", "h2", "ol", "li", "a", "section", "sub", "b", "code", "em",
                                           "table", "thead", "tr", "th", "tbody", "td", "figure", "picture",
                                           "source", "img", "figcaption"}
    alts = [a["alt"] for t, a in parser.tags if t == "img"]
    assert any('in<b>put".png' in alt for alt in alts)  # attribute values too


@pytest.mark.slow
def test_manifest_numbers_match_the_summary(full_report):
    res, model = full_report
    s = summarize(model, (3, 16, 16))
    m = res.manifest["model"]
    assert m["total_params"] == s.total_params == sum(p.numel() for p in model.parameters())
    assert m["trainable_params"] == s.trainable_params
    assert [r["params"] for r in m["rows"]] == [r.params for r in s.rows]
    assert [r["name"] for r in m["rows"]] == [r.name for r in s.rows]
    text = res.path.read_text(encoding="utf-8")
    assert f"<b>{s.total_params:,}</b> parameters" in text
    for r in s.rows:
        if r.params:
            assert str(r.formula).replace("×", "") in re.sub(r"<[^>]+>", "", text).replace("×", "")


@pytest.mark.slow
def test_arithmetic_section_agrees_with_the_layer(full_report):
    res, _ = full_report
    info = next(s["info"] for s in res.manifest["sections"] if s["key"] == "arithmetic")
    assert info["computed"] == pytest.approx(info["actual"], rel=1e-4, abs=1e-5)


def test_missing_inputs_are_left_out_with_a_reason(tmp_path):
    ex = explain(_tiny_net())
    res = write_report(ex, torch.rand(1, 3, 16, 16), out=tmp_path / "r", progress=False,
                       sections=["summary", "embeddings", "style"])
    status = {s["key"]: s for s in res.manifest["sections"]}
    assert status["summary"]["included"]
    assert not status["embeddings"]["included"] and "no data set" in status["embeddings"]["reason"]
    assert not status["style"]["included"] and "style" in status["style"]["reason"]
    text = res.path.read_text(encoding="utf-8")
    assert text.count('class="skipped"') == 2 and "Left out: no data set was given" in text


def _boom(ctx):
    raise RuntimeError("boom in the middle")


def test_failure_leaves_no_output_folder(tmp_path, monkeypatch):
    ex = explain(_tiny_net())
    monkeypatch.setitem(SECTIONS, "feature_maps", ("Feature maps", _boom))
    with pytest.raises(RuntimeError, match="boom in the middle"):
        write_report(ex, torch.rand(1, 3, 16, 16), out=tmp_path / "r", progress=False,
                     sections=["summary", "predictions", "feature_maps", "arithmetic"])
    assert list(tmp_path.iterdir()) == []  # neither the report nor a temporary folder


def test_failure_keeps_the_previous_report(tmp_path, monkeypatch):
    ex = explain(_tiny_net())
    old = write_report(ex, torch.rand(1, 3, 16, 16), out=tmp_path / "r", progress=False, sections=["summary"])
    before = {p.name: p.read_bytes() for p in old.path.parent.iterdir()}
    monkeypatch.setitem(SECTIONS, "predictions", ("Predictions", _boom))
    with pytest.raises(RuntimeError):
        write_report(ex, torch.rand(1, 3, 16, 16), out=tmp_path / "r", progress=False,
                     sections=["summary", "predictions"])
    assert {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_a_new_report_replaces_the_old_one(tmp_path):
    ex = explain(_tiny_net())
    write_report(ex, torch.rand(2, 3, 16, 16), out=tmp_path / "r", progress=False, sections=["predictions"])
    res = write_report(ex, torch.rand(1, 3, 16, 16), out=tmp_path / "r", progress=False, sections=["summary"])
    assert sorted(p.name for p in res.path.parent.iterdir()) == sorted(
        ["index.html", "manifest.json"] + [f.file for f in res.figures] + [f.svg for f in res.figures if f.svg])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_bad_arguments(tmp_path):
    ex = explain(_tiny_net())
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(TypeError, match="unknown report setting"):
        write_report(ex, x, out=tmp_path / "r", occlusion_windw=3)
    with pytest.raises(ValueError, match="sections"):
        write_report(ex, x, out=tmp_path / "r", sections=["summry"])
    with pytest.raises(ValueError, match="embed_methods"):
        write_report(ex, x, out=tmp_path / "r", embed_methods=("isomap",))
    with pytest.raises(ValueError, match="no such image"):
        write_report(ex, [str(tmp_path / "missing.png")], out=tmp_path / "r")
    with pytest.raises(ValueError, match="names"):
        write_report(ex, x, out=tmp_path / "r", names=["a", "b"])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(ValueError, match="not a cnn_explain report"):
        write_report(ex, x, out=tmp_path / "mine")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_model_unchanged_after_a_failed_report(tmp_path, snapshot, monkeypatch):
    model = _tiny_net()
    snap = snapshot(model)
    monkeypatch.setitem(SECTIONS, "arithmetic", ("Arithmetic", _boom))
    with pytest.raises(RuntimeError):
        write_report(explain(model), torch.rand(1, 3, 16, 16), out=tmp_path / "r", progress=False,
                     sections=["summary", "predictions", "arithmetic"])
    snap.assert_unchanged()


def test_facade_calls_write_report(tmp_path):
    ex = explain(_tiny_net(), class_names=list("abcde"))
    res = ex.report(torch.rand(1, 3, 16, 16), out=tmp_path / "r", progress=False, sections=["predictions"])
    assert res.path == tmp_path / "r" / "index.html" and res.path.is_file()
    assert res.manifest["class_names"] == list("abcde")


# ----------------------------------------------------------------------------- the methods side by side
def test_methods_section_compares_five_methods_on_the_same_classes(tmp_path):
    """One figure, rows = images, columns = image + saliency, IG, Grad-CAM, Grad-CAM++, Score-CAM; its numbers
    are the functions' own."""
    from cnn_explain.attribution import grad_cam
    from cnn_explain.attribution.cam_family import cam
    from cnn_explain.attribution.integrated_gradients import integrated_gradients

    model = _tiny_net()
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(8))
    res = write_report(explain(model, class_names=list("abcde")), x, out=tmp_path / "r", progress=False,
                       sections=["methods"], ig_steps=6)
    (status,) = res.manifest["sections"]
    assert status["key"] == "methods" and status["included"] and status["title"] == "Attribution methods side by side"
    info = status["info"]
    assert info["methods"] == ["gradient", "integrated_gradients", "grad_cam", "grad-cam++", "score-cam"]
    with torch.no_grad():
        predicted = model.eval()(x).argmax(1).tolist()
    assert info["targets"] == predicted
    ig = integrated_gradients(model, x, target=predicted, steps=6, progress=False)
    np.testing.assert_allclose(info["ig_convergence_delta"], ig.convergence_delta.numpy(), rtol=1e-6, atol=1e-12)
    assert info["layer"] == grad_cam(model, x).layer == cam(model, x, method="score-cam", progress=False).layer
    (fig,) = res.figures
    assert fig.section == "methods"
    assert (fig.width, fig.height) == (round(2.6 * 6 * 100), round(2.2 * 3 * 100))  # 6 columns, 3 rows
    with Image.open(res.path.parent / fig.file) as im:
        assert im.size == (fig.width, fig.height) and len(np.unique(np.asarray(im.convert("L")))) > 10
    text = res.path.read_text(encoding="utf-8")
    assert "Grad-CAM++, Score-CAM" in text and "IG convergence delta" in text
    assert f"<code>{info['layer']}</code>" in text


def test_methods_section_can_be_turned_off_and_checks_its_settings(tmp_path):
    ex = explain(_tiny_net())
    res = write_report(ex, torch.rand(1, 3, 16, 16), out=tmp_path / "r", progress=False,
                       sections=["methods"], compare_methods=False)
    (status,) = res.manifest["sections"]
    assert not status["included"] and "compare_methods=False" in status["reason"] and not res.figures
    one = write_report(ex, torch.rand(1, 3, 16, 16), out=tmp_path / "r", progress=False, sections=["methods"],
                       compare_cam_methods="layer-cam", ig_steps=2)
    assert one.manifest["sections"][0]["info"]["methods"][3:] == ["layer-cam"]
    with pytest.raises(ValueError, match="compare_cam_methods"):
        write_report(ex, torch.rand(1, 3, 16, 16), out=tmp_path / "r", compare_cam_methods=("gradcam",))
    with pytest.raises(ValueError, match="ig_steps"):
        write_report(ex, torch.rand(1, 3, 16, 16), out=tmp_path / "r", ig_steps=0)
    with pytest.raises(TypeError, match="compare_methods"):
        write_report(ex, torch.rand(1, 3, 16, 16), out=tmp_path / "r", compare_methods="no")


def test_grid_bar_labels_replace_the_meaning_where_given(tiny_net, images):
    from cnn_explain.attribution import grad_cam, saliency
    from cnn_explain.plotting import attribution_grid

    sal, cam = saliency(tiny_net, images), grad_cam(tiny_net, images)
    fig = attribution_grid([sal, cam], bar_labels=["short", None])
    bars = [ax.get_ylabel() for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]
    assert bars[:2] == ["short", f"Grad-CAM at layer {cam.layer}"] and len(bars) == 2 * len(images)
    with pytest.raises(ValueError, match="bar_labels"):
        attribution_grid([sal, cam], bar_labels=["one"])
