"""Every example script runs (tiny settings, random weights) and saves valid PNG figures."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# script -> (argv besides --out, the files it must write)
CASES = {
    "summary": (["--model", "mnist"], ["summary_mnist.png"]),
    "feature_maps": (["--untrained", "--channels", "4"], ["feature_maps.png"]),
    "filters_and_maximization": (["--untrained", "--channels", "0", "1", "--steps", "3"],
                                 ["filters.png", "maximize.png"]),
    "arithmetic": (["--untrained", "--layer", "3", "--h", "2", "--w", "3"], ["arithmetic.png", "receptive_field.png"]),
    "occlusion": (["--untrained", "--images", "2", "--window", "8", "--stride", "8"], ["occlusion.png"]),
    "saliency_and_gradcam": (["--untrained", "--images", "2"], ["saliency_and_gradcam.png"]),
    "sanity_check": (["--untrained", "--images", "1", "--methods", "gradient"], ["sanity_gradient.png"]),
    "embeddings": (["--untrained", "--points", "60", "--methods", "pca", "tsne"],
                   ["embedding_pca.png", "embedding_tsne.png"]),
    "full_report": (["--untrained", "--fast", "--images", "2"], ["index.html", "manifest.json"]),
    "style_transfer": (["--size", "32", "--steps", "2"], ["style.png", "figure.png"]),  # helper F's script
    "batch_dataset": (["--untrained", "--images", "24"], ["results/manifest.json", "figures/class_1.png"]),
    "cam_family": (["--untrained", "--images", "1", "--samples", "2", "--methods", "grad-cam", "score-cam",
                    "eigen-cam", "--compare-precision"], ["cam_methods.png", "score_cam_precision.png"]),
    "integrated_gradients": (["--tiny", "--images", "1", "--steps", "16", "64"],
                             ["ig_attributions.png", "ig_convergence.png"]),
}


def _load(name: str):
    path = EXAMPLES / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    with Image.open(path) as im:
        im.load()
        assert im.size[0] >= 16 and im.size[1] >= 16
        assert len(np.unique(np.asarray(im.convert("L")))) > 1, f"{path} is blank"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_example_runs(name, tmp_path, capsys):
    argv, files = CASES[name]
    module = _load(name)
    out = tmp_path / "out"
    if name == "style_transfer":  # this one writes files: --out image, --figure the comparison figure
        out.mkdir()
        argv = [*argv, "--figure", str(out / "figure.png"), "--out", str(out / "style.png")]
    else:
        argv = [*argv, "--out", str(out)]
    assert module.main(argv) == 0
    for f in files:
        assert (out / f).is_file(), f"{name}.py did not write {f}"
        if f.endswith(".png"):
            _assert_png(out / f)
    if name == "full_report":
        for p in out.glob("*.png"):
            _assert_png(p)
    assert capsys.readouterr().out.strip()  # it tells the user what it did


def test_every_example_is_tested():
    scripts = {p.stem for p in EXAMPLES.glob("*.py") if not p.stem.startswith("_")}
    assert scripts <= set(CASES), f"examples without a test case: {scripts - set(CASES)}"


def test_examples_are_scripts():
    for path in EXAMPLES.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert 'if __name__ == "__main__":' in text and "def main(argv" in text, path.name
    done = subprocess.run([sys.executable, str(EXAMPLES / "summary.py"), "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "--out" in done.stdout, done.stderr[-500:]
