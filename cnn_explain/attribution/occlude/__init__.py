"""Occlusion: the public `occlusion` function and the engines behind it.

* `.api`: `occlusion` and `OcclusionResult`;
* `.engines`: the `Engine` contract (one shared loop over position batches) and
  the batched and incremental engines;
* `.approx`: the adaptive drill-down of ``mode="approx"``;
* `.incremental`, `.plan`, `.graph`, `.regions`, `.grouping`, `.lowp`: Krypton-style
  incremental inference over a ``torch.fx`` graph;
* `.windows`: window positions, baselines and the captum-equal average.

The package is named ``occlude`` so that ``cnn_explain.attribution.occlusion``
is always the function.
"""

from .api import OcclusionResult, occlusion

__all__ = ["occlusion", "OcclusionResult"]
