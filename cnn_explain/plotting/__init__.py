"""Every figure. Each function takes a result (and an optional Matplotlib ``Axes``)
and returns a ``matplotlib.figure.Figure``; none shows or saves it, and none
touches pyplot's global state or the backend (figures are built with
``matplotlib.figure.Figure`` directly).

Submodules: ``attribution``, ``features``, ``embedding``, ``style``, ``summary``.
Names are looked up lazily, so ``from cnn_explain.plotting import heatmap`` loads
only the submodule that defines it.
"""

from importlib import import_module

_SUBMODULES = ("attribution", "features", "embedding", "style", "summary")


def __getattr__(name: str):
    if name.startswith("_"):
        raise AttributeError(name)
    for sub in _SUBMODULES:
        try:
            mod = import_module(f".{sub}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.endswith(f"plotting.{sub}"):
                continue
            raise
        if hasattr(mod, name):
            return getattr(mod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
