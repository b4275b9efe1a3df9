"""Attribution: occlusion, gradient saliency (vanilla, guided, deconvnet, SmoothGrad), Grad-CAM, sanity checks.

Functions load lazily so that ``import cnn_explain.attribution`` stays light.
"""

from importlib import import_module

_WHERE = {
    "occlusion": ".occlusion",
    "saliency": ".gradients",
    "grad_cam": ".cam",
    "sanity_check": ".sanity",
    "deletion_insertion": ".sanity",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
