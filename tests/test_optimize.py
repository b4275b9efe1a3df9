"""The one image-optimization loop: torch.optim's Adam against a plain re-implementation, L-BFGS, the trace."""

from __future__ import annotations

import pytest
import torch

from cnn_explain.optimize import OptimizeSettings, Optimizer, optimize_image


def _quadratic(target: torch.Tensor, params: torch.Tensor):
    def loss():
        value = 0.5 * (params - target).square().sum()
        return value, float(value.detach())

    return loss


def _plain_adam(x: torch.Tensor, grad_fn, steps: int, lr: float, b1=0.9, b2=0.999, eps=1e-8) -> torch.Tensor:
    """Adam as written in Kingma & Ba (2015), Algorithm 1, in float64."""
    m, v = torch.zeros_like(x), torch.zeros_like(x)
    for t in range(1, steps + 1):
        g = grad_fn(x)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        x = x - lr * (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + eps)
    return x


def test_adam_equals_the_paper_algorithm():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    start = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    params = start.clone().requires_grad_(True)
    trace = optimize_image(params, _quadratic(target, params), OptimizeSettings(steps=30, lr=0.1))
    expected = _plain_adam(start, lambda x: x - target, 30, 0.1)
    torch.testing.assert_close(params.detach(), expected, rtol=1e-12, atol=1e-12)
    assert trace.evaluations == 30 and len(trace.history) == 30
    # the history holds the loss where each step started
    assert trace.history[0] == pytest.approx(float(0.5 * (start - target).square().sum()))
    assert trace.history[-1] < 0.5 * trace.history[0]
    assert params.grad is None


def test_lbfgs_solves_a_quadratic_and_counts_evaluations():
    target = torch.tensor([[1.0, -2.0], [3.0, 0.5]], dtype=torch.float64)
    params = torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)
    trace = optimize_image(params, _quadratic(target, params), OptimizeSettings(steps=5, optimizer="lbfgs", lr=1.0))
    torch.testing.assert_close(params.detach(), target)  # a few curvature pairs solve a quadratic
    assert len(trace.history) == 5 and trace.evaluations >= 5
    assert trace.history[0] == pytest.approx(0.5 * float(target.square().sum()))
    assert trace.history[-1] == pytest.approx(0.0, abs=1e-20)


def test_settings_and_bad_params():
    s = OptimizeSettings(steps=3, optimizer="lbfgs")
    assert s.optimizer is Optimizer.LBFGS
    with pytest.raises(ValueError):
        OptimizeSettings(steps=3, optimizer="sgd")
    with pytest.raises(ValueError, match="params must be a leaf tensor"):
        optimize_image(torch.zeros(3), lambda: (torch.zeros(()), None), OptimizeSettings(steps=1))
    p = torch.zeros(3, requires_grad=True)
    trace = optimize_image(p, lambda: (p.sum(), 0), OptimizeSettings(steps=0))
    assert trace.history == [] and trace.evaluations == 0 and torch.equal(p.detach(), torch.zeros(3))
