"""Attribution: occlusion, gradient saliency (vanilla, guided, deconvnet, SmoothGrad), Grad-CAM, sanity checks.

``cnn_explain.attribution.occlusion`` is the *function* (its module is
``cnn_explain.attribution.occlusion`` in ``sys.modules``); the names are bound
here after their submodules load, so the function always wins.
"""

from .cam import grad_cam
from .gradients import saliency
from .occlusion import occlusion
from .sanity import deletion_insertion, sanity_check

__all__ = ["occlusion", "saliency", "grad_cam", "sanity_check", "deletion_insertion"]
