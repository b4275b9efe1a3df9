"""Neural style transfer with Gram matrices, on any CNN (Gatys, Ecker & Bethge, CVPR 2016).

* ``transfer.py`` — :func:`transfer`, :class:`StyleResult`, :class:`StyleSettings`,
  ``DEFAULTS``, :func:`layer_features` (the function names are bound here, so
  ``cnn_explain.style.transfer`` is the function, not the module);
* the losses are objectives of the package's one objective algebra,
  :mod:`cnn_explain.objectives` (:func:`gram_matrix`, :func:`content_loss`,
  :func:`style_loss`, :func:`total_variation` with ``norm="squared"``), re-exported here;
* :mod:`cnn_explain.style.images` — the inputs as RGB tensors, cropped and resized
  to the working size.

The pixels are optimized by the package's one image-optimization loop,
:func:`cnn_explain.optimize.optimize_image`.
"""

from ..objectives import Objective, content_loss, gram_matrix, style_loss, total_variation
from .transfer import DEFAULTS, Init, StyleResult, StyleSettings, layer_features, transfer

__all__ = ["transfer", "StyleResult", "StyleSettings", "Init", "DEFAULTS", "layer_features", "gram_matrix",
           "content_loss", "style_loss", "total_variation", "Objective"]
