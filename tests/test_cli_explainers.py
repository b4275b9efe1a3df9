"""``cnn-explain ig`` and ``cnn-explain cam``: each saves its figure and prints what ran, with the numbers
that the Python functions give for the same model, images and options."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from cnn_explain.attribution.cam_family import cam
from cnn_explain.attribution.integrated_gradients import integrated_gradients
from cnn_explain.cli import COMMANDS, main, parser_for
from cnn_explain.cli._load import load_images, make_explainer

from conftest import random_pngs

MODEL = ["--model", "cnn_explain.models:tiny_vgg", "--input-size", "16"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_explainers")
    rng = np.random.default_rng(1)
    paths = random_pngs([root / f"img{i}.png" for i in range(2)], rng)
    torch.manual_seed(0)
    from cnn_explain.models import tiny_vgg

    torch.save(tiny_vgg().state_dict(), root / "w.pt")
    (root / "names.txt").write_text("\n".join(f"class {i}" for i in range(10)))
    return root, paths


def _png(path) -> None:
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG" and im.size[0] > 50 and len(np.unique(np.asarray(im.convert("L")))) > 1


def _reference_inputs(command: str, argv: list[str]):
    """The model and images exactly as the command loads them (the same options, parsed by its own parser)."""
    args = parser_for(command).parse_args(argv)
    ex = make_explainer(args)
    return ex.model, load_images(ex, args.images, args.input_size, args.classes)


def _argv(files, tmp_path, command, *options):
    root, paths = files
    return [*MODEL, "--weights", str(root / "w.pt"), "--images", *paths, *options,
            "--out", str(tmp_path / "sub" / f"{command}.png"), "--quiet"]


def test_commands_are_registered():
    assert {"ig", "cam"} <= set(COMMANDS)


@pytest.mark.parametrize("method,baseline", [("gausslegendre", "blur"), ("riemann_trapezoid", "0.25")])
def test_ig_prints_the_functions_convergence_delta(files, tmp_path, capsys, method, baseline):
    argv = _argv(files, tmp_path, "ig", "--steps", "12", "--method", method, "--baseline", baseline, "--target",
                 "class 3", "--classes", str(files[0] / "names.txt"))
    assert main(["ig", *argv]) == 0
    out = capsys.readouterr().out
    _png(tmp_path / "sub" / "ig.png")
    assert str(tmp_path / "sub" / "ig.png") in out
    model, x = _reference_inputs("ig", argv)
    ref = integrated_gradients(model, x, target=3, steps=12, method=method,
                               baseline="blur" if baseline == "blur" else float(baseline), progress=False)
    expected = ", ".join(f"img{i}.png {float(d):.6g}" for i, d in enumerate(ref.convergence_delta))
    assert f"Integrated Gradients ({method}, 12 steps): convergence delta: {expected}" in out
    printed = [float(v) for v in re.findall(r"img\d\.png (\S+?)(?:,|\n|$)", out)]
    np.testing.assert_allclose(printed, ref.convergence_delta.numpy(), rtol=1e-5)


def test_ig_exact_prints_the_number_of_linear_pieces(files, tmp_path, capsys):
    argv = _argv(files, tmp_path, "ig", "--exact")
    assert main(["ig", *argv]) == 0
    out = capsys.readouterr().out
    _png(tmp_path / "sub" / "ig.png")
    model, x = _reference_inputs("ig", argv)
    ref = integrated_gradients(model, x, exact=True, progress=False)
    pieces = re.search(r"linear pieces of the path: img0\.png (\d+), img1\.png (\d+);", out)
    assert pieces and [int(p) for p in pieces.groups()] == ref.pieces.tolist()
    assert min(ref.pieces.tolist()) > 1  # the path crosses ReLU boundaries: more than one piece
    delta = ", ".join(f"img{i}.png {float(d):.6g}" for i, d in enumerate(ref.convergence_delta))
    assert f"convergence delta: {delta}" in out


@pytest.mark.parametrize("method,layer", [("grad-cam++", "features.3"), ("score-cam", None),
                                          ("eigen-cam", "features.0")])
def test_cam_prints_method_and_layer(files, tmp_path, capsys, method, layer):
    argv = _argv(files, tmp_path, "cam", "--method", method, *(["--layer", layer] if layer else []))
    assert main(["cam", *argv]) == 0
    out = capsys.readouterr().out
    _png(tmp_path / "sub" / "cam.png")
    model, x = _reference_inputs("cam", argv)
    ref = cam(model, x, method=method, layer=layer, progress=False)
    assert f"{method} at layer {ref.layer!r}" in out.splitlines()
    if layer is not None:
        assert ref.layer == layer


def test_cam_precision_low_says_what_ran(files, tmp_path, capsys):
    argv = _argv(files, tmp_path, "cam", "--method", "score-cam", "--precision", "low")
    assert main(["cam", *argv]) == 0
    out = capsys.readouterr().out
    model, x = _reference_inputs("cam", argv)
    ran = cam(model, x, method="score-cam", precision="low", progress=False).params["precision"]
    assert ran != "exact" and f"({ran})" in out
    argv = _argv(files, tmp_path, "cam", "--method", "grad-cam", "--precision", "low")
    assert main(["cam", *argv]) == 2
    err = capsys.readouterr().err
    assert "pass --precision 'exact'" in err and "Traceback" not in err


def test_bad_values(files, tmp_path, capsys):
    root, paths = files
    base = [*MODEL, "--images", paths[0], "--out", str(tmp_path / "x.png")]
    assert main(["ig", *base, "--baseline", "grey"]) == 2
    assert "--baseline: expected a number or 'blur'" in capsys.readouterr().err
    assert main(["ig", *base, "--method", "simpson"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main(["ig", *base, "--steps", "1", "--method", "riemann_left"]) == 2
    err = capsys.readouterr().err
    assert "--steps must be >= 2" in err and "Traceback" not in err
    assert main(["cam", *base, "--method", "grad-cam+"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
