"""The demo job (``cnn-explain demo --fast``): a report with every section and real figures."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cnn_explain.report import SECTIONS


@pytest.mark.slow
def test_fast_demo_report_has_every_section(tmp_path, capsys):
    from cnn_explain.cli import main
    from cnn_explain.models import mnist_cnn
    from cnn_explain.summary import summarize

    out = tmp_path / "report"
    assert main(["demo", "--fast", "--out", str(out)]) == 0
    assert str(out / "index.html") in capsys.readouterr().out  # it says where the report is
    manifest = json.loads((out / "manifest.json").read_text())
    missing = {s["key"]: s["reason"] for s in manifest["sections"] if not s["included"]}
    assert not missing, f"the demo left sections out: {missing}"
    assert {f["section"] for f in manifest["figures"]} == set(SECTIONS)
    for f in manifest["figures"]:
        with Image.open(out / f["file"]) as im:
            im.load()
            assert len(np.unique(np.asarray(im.convert("L")))) > 1, f["file"]
    # seed 001's network: the manifest's numbers are the summary's
    s = summarize(mnist_cnn(), (1, 28, 28))
    assert manifest["model"]["total_params"] == s.total_params == sum(p.numel() for p in mnist_cnn().parameters())
    assert [r["params"] for r in manifest["model"]["rows"]] == [r.params for r in s.rows]
    # the digits are explained with their class names, and the model is good at them
    preds = next(sec for sec in manifest["sections"] if sec["key"] == "predictions")["info"]["top1"]
    assert set(preds) <= {str(d) for d in range(10)}
    assert "test accuracy" in manifest["settings"]["title"]
    style = next(sec for sec in manifest["sections"] if sec["key"] == "style")["info"]
    assert style["steps"] > 0 and np.isfinite(style["final_total"])


def test_demo_plans():
    from cnn_explain.demo import demo_plan

    full, fast = demo_plan(False), demo_plan(True)
    assert set(full.embed_methods) == {"pca", "tsne", "umap"} and "umap" not in fast.embed_methods
    assert fast.style_steps < full.style_steps and fast.maximize_steps < full.maximize_steps
