"""cli.main and the foundation subcommands (summary, train, demo): they run, and bad arguments exit
with code 2 and a message on stderr."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from cnn_explain import cli
from cnn_explain.models import mnist_cnn
from cnn_explain.train import save_checkpoint


def test_help_everywhere(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("summary", "train", "demo"))
    for name in cli.COMMANDS:
        assert cli.main([name, "--help"]) == 0
        assert "usage: cnn-explain " + name in capsys.readouterr().out


def test_module_help_subprocess():
    r = subprocess.run([sys.executable, "-m", "cnn_explain.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "summary" in r.stdout


def test_no_command_is_an_error(capsys):
    assert cli.main([]) == 2
    assert "choose a command" in capsys.readouterr().err


def test_summary_seed_table(capsys):
    assert cli.main(["summary", "--model", "cnn_explain.models:cifar10_cnn", "--input-shape", "3,32,32"]) == 0
    out = capsys.readouterr().out
    assert "(2048+1)×128 = 262,272" in out and "Total params: 550,570" in out


def test_summary_json_with_weights(tmp_path, capsys):
    torch.manual_seed(0)
    path = save_checkpoint(mnist_cnn(), tmp_path / "m.pt")
    argv = ["summary", "--model", "cnn_explain.models:mnist_cnn", "--weights", str(path), "--input-shape", "1,28,28",
            "--json"]
    assert cli.main(argv) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["total_params"] == sum(p.numel() for p in mnist_cnn().parameters()) and d["rows"][0]["neurons"] == 25088


@pytest.mark.parametrize(
    "argv, message",
    [
        (["summary", "--model", "cifar10_cnn"], "--model must be module:factory"),
        (["summary", "--model", "no_such_module_xyz:f"], "cannot import module 'no_such_module_xyz'"),
        (["summary", "--model", "cnn_explain.models:nope"], "has no attribute 'nope'"),
        (["summary", "--model", "cnn_explain.models:__doc__"], "not callable"),
        (["summary", "--model", "cnn_explain.summary:Summary"], "Summary() raised TypeError"),
        (["summary", "--model", "cnn_explain.cli:build_parser"], "expected a torch.nn.Module"),
        (["summary", "--input-shape", "1,3,32,32"], "no batch dimension"),
        (["summary", "--input-shape", "1,32,32"], "--input-shape"),
        (["summary", "--weights", "/no/such/file.pt"], "--weights"),
        (["train", "--epochs", "0"], "--epochs must be >= 1"),
        (["train", "--threads", "0"], "--threads must be >= 1"),
        (["train", "--optimizer", "rmsprop"], "invalid choice"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2(argv, message, capsys):
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_summary_weights_that_do_not_match(tmp_path, capsys):
    path = save_checkpoint(mnist_cnn(), tmp_path / "mnist.pt")
    assert cli.main(["summary", "--weights", str(path)]) == 2  # default model is cifar10_cnn
    err = capsys.readouterr().err
    assert "--weights" in err and "missing keys" in err


def test_train_writes_checkpoint(tmp_path, capsys, monkeypatch):
    import cnn_explain.data as data

    small = data.load_digits("train")
    monkeypatch.setattr(data, "load_digits", lambda split="train", **kw: torch.utils.data.TensorDataset(
        *(t[:64] for t in small.tensors)))
    out = tmp_path / "w.pt"
    assert cli.main(["train", "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "test accuracy" in text and out.is_file()
    assert cli.main(["summary", "--model", "cnn_explain.models:mnist_cnn", "--weights", str(out),
                     "--input-shape", "1,28,28"]) == 0


def test_demo_wiring_and_its_checks_before_any_work(tmp_path, capsys, monkeypatch):
    """Wiring only: what the demo prints is tested in test_demo.py (through a pipe), the full report there too."""
    import cnn_explain.demo as demo

    calls = []
    monkeypatch.setattr(demo, "run_demo", lambda **kw: calls.append(kw) or tmp_path / "r" / "index.html")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["demo", "--quiet"]) == 0
    assert "index.html" in capsys.readouterr().out
    assert calls == [dict(out="report", fast=False, progress=False, cache_dir=None)]
    assert cli.main(["demo", "--out", str(tmp_path / "r"), "--fast", "--quiet"]) == 0
    assert calls[-1] == dict(out=str(tmp_path / "r"), fast=True, progress=False, cache_dir=None)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    (tmp_path / "afile").write_text("x")
    for argv, message in ((["--out", "mine"], "--out 'mine' is a folder that is not a cnn_explain report"),
                          (["--cache-dir", "afile"], "--cache-dir afile is a file")):
        assert cli.main(["demo", *argv]) == 2
        assert message in capsys.readouterr().err
    assert len(calls) == 2 and (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_every_subcommand_is_listed(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in cli.COMMANDS)
