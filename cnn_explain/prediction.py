"""The result of :meth:`cnn_explain.Explainer.predict`: the top-k classes of each image."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Prediction"]


@dataclass(frozen=True)
class Prediction:
    """Top-k predictions for a batch.

    Attributes:
        indices: ``(N, k)`` class indices, most probable first.
        probs: ``(N, k)`` softmax probabilities.
        labels: ``N`` lists of ``k`` class names (the indices as strings without names).
    """

    indices: torch.Tensor
    probs: torch.Tensor
    labels: list[list[str]]

    def __str__(self) -> str:
        lines = []
        for i, (labs, ps) in enumerate(zip(self.labels, self.probs.tolist())):
            lines.append(f"image {i}: " + ", ".join(f"{lab} {p:.1%}" for lab, p in zip(labs, ps)))
        return "\n".join(lines)
