"""The capability subcommands: each runs on a user's model (``pkg.module:factory``) and saves a figure;
``--help`` everywhere; bad arguments exit with status 2 and a message naming the argument."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cnn_explain.cli import COMMANDS, main

from conftest import random_pngs

MODEL = ["--model", "cnn_explain.models:tiny_vgg", "--input-size", "16"]


CAPABILITIES = ["report", "occlusion", "saliency", "grad-cam", "ig", "cam", "maximize", "arithmetic", "embed", "style"]


def _run(argv) -> int:
    """The exit code of ``cnn-explain ARGV``."""
    return main(argv)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    paths = random_pngs([root / f"img{i}.png" for i in range(2)], rng)
    for c in ("cats", "dogs"):
        (root / "data" / c).mkdir(parents=True)
        random_pngs([root / "data" / c / f"{i}.png" for i in range(6)], rng)
    (root / "names.txt").write_text("\n".join(["<script>evil</script>"] + [f"class {i}" for i in range(1, 10)]))
    torch.manual_seed(0)
    from cnn_explain.models import tiny_vgg

    torch.save(tiny_vgg().state_dict(), root / "w.pt")
    torch.save(tiny_vgg(num_classes=3).state_dict(), root / "wrong.pt")
    return root, paths


def _png(path) -> None:
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG" and im.size[0] > 50 and len(np.unique(np.asarray(im.convert("L")))) > 1


FIGURE_CASES = {
    "occlusion": ["--window", "8", "--stride", "8", "--target", "3", "--mode", "approx", "--winograd", "off"],
    "saliency": ["--method", "gradient"],
    "grad-cam": ["--layer", "features.3", "--guided"],
    "arithmetic": ["--layer", "features.0", "--channel", "1", "--h", "2", "--w", "2"],
}


@pytest.mark.slow
@pytest.mark.parametrize("command", list(FIGURE_CASES))
def test_image_commands_save_a_figure(command, files, tmp_path, capsys):
    root, paths = files
    images = paths[:1] if command == "arithmetic" else paths
    out = tmp_path / "sub" / f"{command}.png"
    argv = [command, *MODEL, "--weights", str(root / "w.pt"), "--images", *images, *FIGURE_CASES[command],
            "--out", str(out), "--quiet"]
    assert _run(argv) == 0
    _png(out)
    assert str(out) in capsys.readouterr().out


@pytest.mark.slow
def test_maximize_embed_style(files, tmp_path):
    root, paths = files
    assert _run(["maximize", *MODEL, "--layer", "features.3", "--channels", "0", "2", "--steps", "2",
                 "--out", str(tmp_path / "m.png"), "--quiet"]) == 0
    _png(tmp_path / "m.png")
    assert _run(["embed", *MODEL, "--data", str(root / "data"), "--method", "pca",
                 "--out", str(tmp_path / "e.png"), "--quiet"]) == 0
    _png(tmp_path / "e.png")
    assert _run(["style", "--content", paths[0], "--style", paths[1], "--size", "32", "--steps", "2",
                 "--out", str(tmp_path / "sub" / "s.png"), "--figure", str(tmp_path / "f.png"), "--quiet"]) == 0
    _png(tmp_path / "f.png")  # the side-by-side figure
    from PIL import Image

    styled = Image.open(tmp_path / "sub" / "s.png")  # the stylized image itself
    assert styled.format == "PNG" and styled.size == (32, 32)


@pytest.mark.slow
def test_report_command(files, tmp_path):
    root, paths = files
    out = tmp_path / "rep"
    argv = ["report", *MODEL, "--weights", str(root / "w.pt"), "--images", *paths, "--classes",
            str(root / "names.txt"), "--data", str(root / "data"), "--embed-methods", "pca", "--maximize-steps",
            "2", "--occlusion-window", "8", "--occlusion-stride", "8", "--out", str(out), "--quiet"]
    assert _run(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    status = {s["key"]: s for s in manifest["sections"]}
    assert all(s["included"] for k, s in status.items() if k != "style"), status
    assert manifest["images"] == ["img0.png", "img1.png"]
    assert manifest["class_names"][0] == "<script>evil</script>"
    text = (out / "index.html").read_text(encoding="utf-8")
    assert "<script" not in text
    for f in manifest["figures"]:
        _png(out / f["file"])


def test_capabilities_are_registered():
    assert set(CAPABILITIES) <= set(COMMANDS)


@pytest.mark.parametrize("command", CAPABILITIES)
def test_help(command, capsys):
    assert _run([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert "usage:" in text and ("--out" in text)


BAD = [
    (["occlusion", "--model", "no_colon", "--images", "x.png"], "pkg.module:factory"),
    (["occlusion", "--model", "no.such.module:f", "--images", "{img}"], "cannot load"),
    (["occlusion", *MODEL, "--images", "missing.png"], "no such file"),
    (["occlusion", *MODEL, "--images", "{img}", "--window", "0"], "positive integer"),
    (["occlusion", *MODEL, "--images", "{img}", "--winograd", "yes"], "invalid choice"),
    (["saliency", *MODEL, "--images", "{img}", "--method", "magic"], "invalid choice"),
    (["grad-cam", *MODEL, "--images", "{img}", "--layer", "nosuchlayer"], "nosuchlayer"),
    (["occlusion", *MODEL, "--images", "{img}", "--weights", "{wrong}"], "does not fit"),
    (["occlusion", *MODEL, "--images", "{img}", "--mean", "0.1", "0.2"], "--mean"),
    (["maximize", "--model", "cnn_explain.models:tiny_vgg", "--layer", "features.0"], "--input-size"),
    (["embed", "--model", "cnn_explain.models:tiny_vgg"], "--data"),
    (["report", *MODEL], "--images"),
]


@pytest.mark.parametrize("argv,message", BAD)
def test_bad_arguments_exit_2(argv, message, files, capsys, tmp_path):
    root, paths = files
    argv = [a.format(img=paths[0], wrong=root / "wrong.pt") for a in argv] + ["--out", str(tmp_path / "x.png")]
    assert _run(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "usage:" in err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("flags,expected", [([], ("exact", None)), (["--mode", "approx", "--winograd", "off"],
                                                                    ("approx", False)),
                                            (["--mode", "batched", "--winograd", "on"], ("batched", True))])
def test_occlusion_mode_and_winograd_reach_the_call(flags, expected, files, tmp_path, monkeypatch):
    from cnn_explain.explainer import Explainer

    root, paths = files
    seen = []
    real = Explainer.occlusion

    def spy(self, *args, **kwargs):
        seen.append((kwargs["mode"], kwargs["winograd"]))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Explainer, "occlusion", spy)
    argv = ["occlusion", *MODEL, "--weights", str(root / "w.pt"), "--images", paths[0], "--window", "8",
            "--stride", "8", *flags, "--out", str(tmp_path / "o.png"), "--quiet"]
    assert _run(argv) == 0 and seen == [expected]
    _png(tmp_path / "o.png")
