"""Inside the network: feature maps, filters, activation maximization, the worked arithmetic of one output."""

from importlib import import_module

_WHERE = {
    "feature_maps": ".maps",
    "filters": ".filters",
    "maximize": ".maximize",
    "arithmetic": ".arithmetic",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
