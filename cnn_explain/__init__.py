"""cnn_explain — plug into any PyTorch CNN and explain it.

``ex = explain(model)`` gives the model's arithmetic (shapes, parameter formulas,
receptive fields, the worked dot product behind any output), feature maps,
filters and activation maximization, occlusion, gradient / guided-backprop /
Grad-CAM saliency, sanity checks, PCA / t-SNE / UMAP embeddings, a Gram-matrix
style-transfer demo and an HTML report with every figure.

Importing this package loads torch and nothing heavier: scikit-learn's manifold
learners, umap and matplotlib load only when a capability needs them.
"""

from .explainer import Explainer, explain
from .prediction import Prediction

__version__ = "0.1.0"
__all__ = ["explain", "Explainer", "Prediction", "__version__"]
