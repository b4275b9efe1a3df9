"""The one registry of ``cnn-explain``: every subcommand is in it, and every subcommand turns each bad
argument it takes into exit code 2 with one error line on stderr (no traceback).

The bad-argument cases are derived from each registered command's own options, so a
new command is checked as soon as it is registered.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnn_explain
from cnn_explain import cli
from cnn_explain.cli import COMMANDS, Command, UsageError, build_parser, main, parser_for

PACKAGE = Path(cnn_explain.__file__).resolve().parent
EXPECTED = {"summary", "train", "demo", "report", "occlusion", "saliency", "grad-cam", "maximize", "arithmetic",
            "embed", "style"}

#: option -> a valid value, given whenever a command has the option (so only the bad one fails)
GOOD = {
    "--model": "cnn_explain.models:tiny_vgg",
    "--input-size": "16",
    "--images": "{img}",
    "--layer": "features.0",
    "--data": "{data}",
    "--size": "16",
    "--steps": "1",
    "--epochs": "1",
}

#: option -> (a bad value, what the error line must contain)
BAD = {
    "--model": ("no_colon", "--model"),
    "--weights": ("{tmp}/missing.pt", "--weights"),
    "--images": ("{tmp}/missing.png", "--images"),
    "--layer": ("nosuchlayer", "nosuchlayer"),
    "--classes": ("{tmp}/missing.txt", "--classes"),
    "--data": ("{tmp}/no_such_folder", "--data"),
    "--content": ("{tmp}/missing.jpg", "content"),
    "--input-shape": ("1,2", "--input-shape"),
    "--input-size": ("0", "--input-size"),
    "--epochs": ("0", "--epochs"),
    "--out": ("{foreign}", "--out"),  # a folder of the user's: never written into
    "--target": ("nosuchclass", "--target"),
    "--cache-dir": ("{img}", "--cache-dir"),  # a file, not a folder
    "--figure": ("{foreign}", "--out {foreign} is a folder"),
    "--no-such-option": ("1", "--no-such-option"),  # every command: not one of its options
}


def _options(name: str) -> set[str]:
    return {s for a in parser_for(name)._actions for s in a.option_strings}


def _cases() -> list[tuple[str, str]]:
    cases = []
    for name in COMMANDS:
        opts = _options(name) | {"--no-such-option"}
        cases += [(name, opt) for opt in BAD if opt in opts]
    return cases


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("cli_registry")
    rng = np.random.default_rng(0)
    img = root / "img.png"
    Image.fromarray((rng.random((20, 20, 3)) * 255).astype(np.uint8)).save(img)
    for c in ("a", "b"):
        (root / "data" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray((rng.random((20, 20, 3)) * 255).astype(np.uint8)).save(root / "data" / c / f"{i}.png")
    (root / "foreign").mkdir()
    (root / "foreign" / "app.js").write_text("console.log('mine')")
    (root / "foreign" / "manifest.json").write_text("{}")
    return {"img": str(img), "data": str(root / "data"), "foreign": str(root / "foreign")}


# --------------------------------------------------------------------------- the registry
def test_every_subcommand_is_in_the_one_registry():
    assert EXPECTED <= set(COMMANDS)
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert list(subparsers.choices) == list(COMMANDS)  # the parser is built from the registry, nothing else
    for name, cmd in COMMANDS.items():
        assert isinstance(cmd, Command) and cmd.name == name and cmd.help and callable(cmd.run)
        assert parser_for(name).prog == f"cnn-explain {name}"
    with pytest.raises(dataclasses.FrozenInstanceError):
        COMMANDS["summary"].name = "other"  # type: ignore[misc]


def test_registering_a_name_twice_is_an_error():
    with pytest.raises(ValueError, match="'summary' is already registered"):
        cli.command("summary", help="again", arguments=lambda p: None)(lambda args: 0)
    with pytest.raises(ValueError, match="no subcommand 'frobnicate'"):
        parser_for("frobnicate")


def test_usage_error_is_one_line_and_exit_2(monkeypatch, capsys):
    def run(args: argparse.Namespace) -> int:
        raise UsageError(f"--count: expected at most 3,\n got {args.count}")

    monkeypatch.setitem(COMMANDS, "boom", Command("boom", "raises", lambda p: p.add_argument("--count"), run))
    assert main(["boom", "--count", "7"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == "cnn-explain boom: error: --count: expected at most 3, got 7"
    assert err.startswith("usage: cnn-explain boom") and "Traceback" not in err


def test_no_module_outside_cli_imports_argparse():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if (PACKAGE / "cli") in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] == "argparse" for n in names):
                offenders.append(str(path.relative_to(PACKAGE)))
    assert not offenders, f"argparse imported outside cnn_explain/cli/: {offenders}"


@pytest.mark.parametrize("module", ["cnn_explain", "cnn_explain.cli"])
def test_python_dash_m(module):
    r = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and all(name in r.stdout for name in EXPECTED)


# --------------------------------------------------------------------------- bad arguments, per command
@pytest.mark.parametrize("name,option", _cases(), ids=lambda v: str(v))
def test_bad_argument_exits_2_with_one_line(name, option, files, tmp_path, capsys):
    opts = _options(name)
    fill = dict(files, tmp=str(tmp_path))
    argv = [name]
    for opt, value in GOOD.items():
        if opt in opts and opt != option:
            argv += [opt, value.format(**fill)]
    bad, expected = BAD[option]
    argv += [option, bad.format(**fill)]
    out = tmp_path / "out" / "x.png"
    if "--out" in opts and option != "--out":
        argv += ["--out", str(out)]
    foreign = {str(f.name): f.read_bytes() for f in Path(files["foreign"]).iterdir()}
    torch.manual_seed(0)
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert "Traceback" not in err and len(errors) == 1 and err.splitlines()[-1] == errors[0], err
    assert errors[0].startswith("cnn-explain") and expected.format(**fill) in errors[0], errors[0]
    assert not out.parent.exists()  # nothing was written
    assert {str(f.name): f.read_bytes() for f in Path(files["foreign"]).iterdir()} == foreign


def test_every_command_with_a_bad_argument_case():
    """Each command is in the parametrized test above with at least --no-such-option and --out where it has one."""
    cases = _cases()
    for name in COMMANDS:
        assert (name, "--no-such-option") in cases
        if "--out" in _options(name):
            assert (name, "--out") in cases


# --------------------------------------------------------------------------- help
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_has_help_with_its_default_once(name):
    parser = parser_for(name)
    formatter = parser._get_formatter()
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        text = formatter._expand_help(action) if action.help else ""
        assert text.strip(), f"{name} {action.option_strings[0]} has no help"
        assert text.lower().count("default") <= 1 and "default: None" not in text, (name, text)
        default = action.default
        if default not in (None, False, [], argparse.SUPPRESS) and "default" not in action.help.lower():
            shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
            assert text.endswith(f"(default: {shown})"), (name, text)
    assert "(default: None)" not in parser.format_help()


def test_model_help_says_it_runs_the_users_code():
    text = " ".join(parser_for("occlusion").format_help().split())
    assert "runs that code" in text and "file.py:factory" in text


def test_cli_words_translate_argument_names_to_options():
    from cnn_explain.cli import cli_words

    parser = parser_for("grad-cam")
    assert cli_words("layer='x' is not a layer", parser) == "--layer 'x' is not a layer"
    assert cli_words("images[1]='a.png' could not be read", parser) == "--images 'a.png' could not be read"
    text = "input_size must be positive; player=1 stays"
    assert cli_words(text, parser) == "--input-size must be positive; player=1 stays"
