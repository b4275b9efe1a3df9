"""``--model`` and ``--weights``: build the user's model from ``module:factory``, ``file.py:factory`` or ``digits``.

Importing a module or running a file named by ``--model`` runs that code, by
design (as ``python file.py`` would): give only code you trust. Everything
else the toolkit reads is data: checkpoints go through
``torch.load(weights_only=True)``.

``sys.path`` is left as it was found: the current folder (for ``module:factory``)
or the file's folder (for ``file.py:factory``) is on it only while the module is
imported and the factory runs. The imported module stays in ``sys.modules``
(under its file name for a ``.py`` file), so the model's classes can still be
pickled in this process.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._options import DIGITS
from ._registry import UsageError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["load_model"]

EXAMPLE = "e.g. cnn_explain.models:cifar10_cnn or path/to/nets.py:small_cnn"


def load_model(spec: str, weights: str | None = None) -> nn.Module:
    """``'pkg.module:factory'``, ``'path/to/file.py:factory'`` or ``'digits'`` -> an ``nn.Module`` in eval mode.

    ``factory`` may be dotted (``pkg.module:Class.build``) and is called with no
    arguments, under a fixed seed (so random weights are the same on every run;
    torch's global random state is left as it was). ``weights`` (a state dict)
    is loaded into it. Without ``weights``, a factory whose weights are random
    gets a one-line notice on stderr.

    Raises:
        UsageError: naming ``--model`` / ``--weights``; the CLI turns it into exit code 2.
    """
    if spec == DIGITS:
        from ..train import pretrained_digits_cnn

        return pretrained_digits_cnn(progress=False).eval()
    factory = _factory(spec)
    model, consumed_randomness = _call(factory, spec, seed=0)
    if weights is not None:
        _load_weights(model, weights)
    elif consumed_randomness and _is_random(factory, spec, model):
        print(f"cnn-explain: note: --model {spec} builds a network with random weights and no --weights was "
              "given, so the explanations show an untrained network", file=sys.stderr)
    return model.eval()


def _load_weights(model: nn.Module, weights: str) -> None:
    from ..train import load_checkpoint

    if not Path(weights).is_file():
        raise UsageError(f"--weights: no such file: {weights}")
    try:
        load_checkpoint(model, weights)
    except ValueError as exc:
        raise UsageError(f"--weights: the checkpoint does not fit the model ({exc})") from None


@contextlib.contextmanager
def _on_sys_path(folder: str) -> Iterator[None]:
    """``folder`` first on ``sys.path`` for the duration, then ``sys.path`` as it was."""
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        yield
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)


def _is_file_spec(module_part: str) -> bool:
    return module_part.endswith(".py") or "/" in module_part or os.sep in module_part


def _factory(spec: str) -> Callable[[], Any]:
    """The callable named by ``spec`` (its module imported, or its file run)."""
    module_part, sep, attr = spec.rpartition(":")
    if not sep or not module_part or not attr:
        raise UsageError(f"--model must be module:factory, i.e. pkg.module:factory or path/to/file.py:factory "
                         f"({EXAMPLE}), or 'digits', got {spec!r}")
    if _is_file_spec(module_part):
        module, folder = _run_file(module_part), str(Path(module_part).resolve().parent)
    else:
        module, folder = _import(module_part), os.getcwd()
    factory: Any = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise UsageError(f"--model: cannot load it: {module_part!r} has no attribute {attr!r}")
    if not callable(factory):
        raise UsageError(f"--model: {spec!r} is not callable (expected a function returning an nn.Module)")

    def call() -> Any:
        with _on_sys_path(folder):  # a factory may import its own modules lazily
            return factory()

    return call


def _import(name: str) -> Any:
    with _on_sys_path(os.getcwd()):  # the user's own modules, as `python -m` would find them
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            hint = ""
            if (exc.name or "") and name.startswith(exc.name or ""):
                hint = (f"; check that it is in the current folder ({os.getcwd()}) or on PYTHONPATH, "
                        "or give its file: --model path/to/file.py:factory")
            raise UsageError(f"--model: cannot load it: cannot import module {name!r}: {exc}{hint}") from None
        except Exception as exc:  # the user's module failed while it ran
            raise UsageError(f"--model: importing {name!r} raised {type(exc).__name__}: {exc}") from None


def _run_file(path: str) -> Any:
    """Run the Python file ``path`` as a module named after it (kept in ``sys.modules``)."""
    p = Path(path).expanduser().resolve()
    if not p.is_file() or p.suffix != ".py":
        raise UsageError(f"--model: no such Python file: {path} (relative paths start at the current folder, "
                         f"{os.getcwd()})")
    name = p.stem if p.stem.isidentifier() else "model_file"
    loaded = sys.modules.get(name)
    if loaded is not None and getattr(loaded, "__file__", None) == str(p):
        return loaded
    if loaded is not None:  # another module of that name: do not replace it
        name = f"cnn_explain_user_{abs(hash(str(p))):x}"
    spec = importlib.util.spec_from_file_location(name, p)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    try:
        with _on_sys_path(str(p.parent)):  # the file may import modules beside it
            spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as exc:
        del sys.modules[name]
        raise UsageError(f"--model: running {path} raised {type(exc).__name__}: {exc}") from None
    return module


def _call(factory: Callable[[], Any], spec: str, seed: int) -> tuple[nn.Module, bool]:
    """``factory()`` under ``seed`` (global random state restored): the model and whether it drew random numbers."""
    import torch
    from torch import nn

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        before = torch.random.get_rng_state()
        try:
            model = factory()
        except Exception as exc:  # the user's factory: report it as a usage error, not a traceback
            raise UsageError(f"--model: {spec}() raised {type(exc).__name__}: {exc}") from None
        consumed = not torch.equal(before, torch.random.get_rng_state())
    if not isinstance(model, nn.Module):
        raise UsageError(f"--model: {spec}() returned a {type(model).__name__}, expected a torch.nn.Module")
    return model, consumed


def _is_random(factory: Callable[[], Any], spec: str, model: nn.Module) -> bool:
    """True when the factory's weights depend on the seed (built again under another seed and compared)."""
    import torch

    other, _ = _call(factory, spec, seed=1)
    mine, theirs = model.state_dict(), other.state_dict()
    return any(k in theirs and v.is_floating_point() and v.shape == theirs[k].shape and not torch.equal(v, theirs[k])
               for k, v in mine.items())
