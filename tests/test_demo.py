"""The demo job (``cnn-explain demo --fast``): a report with every section and real figures."""

from __future__ import annotations

import json
import re

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


TINY_PLAN = ("DemoPlan(n_images=1, embed_methods=('pca',), embed_points=30, maximize_steps=2, maximize_channels=2, "
             "occlusion_window=14, occlusion_stride=14, style_size=16, style_steps=1)")


@pytest.mark.slow
def test_a_piped_demo_log_reads_in_order(tmp_path):
    """The demo's steps with tiny settings, stdout and stderr through one pipe, as `make demo | tee log` sees them."""
    import os
    import subprocess
    import sys

    code = ("from cnn_explain.demo import run_demo, DemoPlan\n"
            f"run_demo(out={str(tmp_path / 'report')!r}, cache_dir={str(tmp_path / 'cache')!r}, plan={TINY_PLAN})\n")
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                       timeout=600)
    log = r.stdout.decode("utf-8", "replace")
    assert r.returncode == 0, log
    assert "\x1b[A" not in log and "\x1b[" not in log, "escape codes in a piped log"
    lines = log.splitlines()

    def first(text: str) -> int:
        found = [i for i, line in enumerate(lines) if re.search(text, line)]
        assert found, f"{text!r} not in the log:\n{log}"
        return found[0]

    order = [first("step 1/3: training the MNIST-style CNN"), first(r"training \(4 epochs\)"),
             first("step 2/3: measuring its accuracy"), first("Total params"), first("Test accuracy"),
             first("step 3/3: writing the report"), first(r"report \[1/\d+\] Model summary"),
             first(r"report \[\d+/\d+\] Embeddings"), first(r"report \[\d+/\d+\] Style transfer"),
             first("done in")]
    assert order == sorted(order), log
    assert log.count("Test accuracy") == 1 and (tmp_path / "report" / "index.html").is_file()
    # a second run loads the checkpoint and says so
    r = subprocess.run([sys.executable, "-c", code.replace("report'", "report2'")], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, env=env, timeout=600)
    assert r.returncode == 0 and "step 1/3: loading the trained MNIST-style CNN from" in r.stdout.decode()
