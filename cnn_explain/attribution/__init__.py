"""Attribution: occlusion, gradient saliency (vanilla, guided, deconvnet, SmoothGrad), Grad-CAM, sanity checks.

``cnn_explain.attribution.occlusion`` is the *function*; its code lives in the
subpackage ``cnn_explain.attribution.occlude``, whose name differs on purpose.
"""

from .cam import grad_cam
from .gradients import saliency
from .occlude import occlusion
from .sanity import deletion_insertion, sanity_check

__all__ = ["occlusion", "saliency", "grad_cam", "sanity_check", "deletion_insertion"]
