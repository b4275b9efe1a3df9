"""Shared fixtures: tiny seeded models (nn.ReLU, F.relu, residual with inplace ReLU) and model-state checks."""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

os.environ.setdefault("MPLBACKEND", "Agg")


class TinyNet(nn.Module):
    """conv(3->4,3,pad1) relu maxpool2 conv(4->6,3) relu avgpool(1) linear(6->5): ReLU modules."""

    def __init__(self, in_channels: int = 3, num_classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 6, 3)
        self.relu2 = nn.ReLU()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, num_classes)

    def forward(self, x):
        x = self.pool(self.relu1(self.conv1(x)))
        x = self.gap(self.relu2(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))


class TinyFunctionalNet(TinyNet):
    """Same weights layout as TinyNet but ReLU via F.relu / torch.relu inside forward."""

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.gap(torch.relu(self.conv2(x)))
        return self.fc(torch.flatten(x, 1))


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)  # reused twice per forward
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class TinyResNet(nn.Module):
    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = BasicBlock(8, 8)
        self.layer2 = BasicBlock(8, 16, stride=2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.relu(self.bn(self.stem(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.gap(x), 1))


def _seeded(cls, seed: int = 0, **kw):
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        m = cls(**kw)
        for mod in m.modules():  # non-trivial BatchNorm statistics
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.data.uniform_(0.5, 1.5)
                mod.bias.data.uniform_(-0.2, 0.2)
        return m.eval()
    finally:
        torch.random.set_rng_state(state)


@pytest.fixture
def tiny_net():
    return _seeded(TinyNet)


@pytest.fixture
def tiny_functional_net():
    return _seeded(TinyFunctionalNet)


@pytest.fixture
def tiny_resnet():
    return _seeded(TinyResNet)


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(1)
    return torch.rand(3, 3, 12, 10, generator=g)


class ModelSnapshot:
    """Everything a capability must leave unchanged on a model."""

    def __init__(self, model: nn.Module) -> None:
        from cnn_explain.hooks import hook_count

        self.model = model
        self.state = copy.deepcopy(model.state_dict())
        self.training = [m.training for m in model.modules()]
        self.req = [p.requires_grad for p in model.parameters()]
        self.grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
        self.grad_ids = [id(p.grad) for p in model.parameters()]
        self.hooks = hook_count(model)

    def assert_unchanged(self) -> None:
        from cnn_explain.hooks import hook_count

        m = self.model
        now = m.state_dict()
        assert now.keys() == self.state.keys()
        for k, v in self.state.items():
            assert torch.equal(now[k], v), f"state_dict[{k}] changed"
        assert [x.training for x in m.modules()] == self.training, "training flags changed"
        assert [p.requires_grad for p in m.parameters()] == self.req, "requires_grad changed"
        for p, g, gid in zip(m.parameters(), self.grads, self.grad_ids):
            if g is None:
                assert p.grad is None, ".grad appeared"
            else:
                assert id(p.grad) == gid and torch.equal(p.grad, g), ".grad changed"
        assert hook_count(m) == self.hooks, "hooks left behind"


@pytest.fixture
def snapshot():
    """snapshot(model) -> ModelSnapshot; call .assert_unchanged() after the work."""
    return ModelSnapshot


class Boom(Exception):
    pass


class ExplodingNet(TinyNet):
    """TinyNet whose forward raises after conv1 when .explode is True."""

    explode = True

    def forward(self, x):
        y = self.relu1(self.conv1(x))
        if self.explode:
            raise Boom("inside forward")
        return self.fc(torch.flatten(self.gap(self.relu2(self.conv2(self.pool(y)))), 1))


@pytest.fixture
def exploding_net():
    return _seeded(ExplodingNet)


class GlobalState:
    """Process-wide state a capability must leave as it found it.

    Torch's, NumPy's and Python's global RNG, grad mode, inference mode, the
    default dtype, torch's thread count, global module hooks, active torch
    function modes, CPU autocast (on and its dtype) and matplotlib's backend (``matplotlib.get_backend()`` and
    ``rcParams['backend']``).
    """

    def __init__(self) -> None:
        import random

        import numpy as np

        self.values = self._read(random, np)

    @staticmethod
    def _read(random, np) -> dict:
        from torch.nn.modules import module as nn_module

        hooks = sum(len(getattr(nn_module, name, {}) or {}) for name in dir(nn_module) if name.startswith("_global_")
                    and name.endswith("hooks"))
        return {
            "torch rng": torch.random.get_rng_state(),
            "numpy rng": np.random.get_state(),
            "python rng": random.getstate(),
            "grad mode": torch.is_grad_enabled(),
            "inference mode": torch.is_inference_mode_enabled(),
            "default dtype": torch.get_default_dtype(),
            "threads": torch.get_num_threads(),
            "global module hooks": hooks,
            "torch function modes": len(torch.overrides._get_current_function_mode_stack()),
            "cpu autocast": (torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")),
            **_matplotlib_backend(),
        }

    def assert_unchanged(self) -> None:
        import random

        import numpy as np

        now = self._read(random, np)
        assert torch.equal(now.pop("torch rng"), self.values["torch rng"]), "torch's global RNG state changed"
        before_np, now_np = self.values["numpy rng"], now.pop("numpy rng")
        assert before_np[0] == now_np[0] and np.array_equal(before_np[1], now_np[1]) and \
            before_np[2:] == now_np[2:], "NumPy's global RNG state changed"
        for key, value in now.items():
            assert value == self.values[key], f"{key} changed: {self.values[key]!r} -> {value!r}"


def _matplotlib_backend() -> dict:
    """matplotlib's backend as ``get_backend()`` resolves it and as ``rcParams`` stores it."""
    import matplotlib

    return {"matplotlib backend": matplotlib.get_backend(),
            "matplotlib rcParams['backend']": dict.__getitem__(matplotlib.rcParams, "backend")}


class InputSnapshot:
    """Values, dtype, ``requires_grad`` and ``.grad`` of the tensors given to a capability."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        self.tensors = tensors
        self.copies = [(t.detach().clone(), t.dtype, t.requires_grad, t.grad) for t in tensors]

    def assert_unchanged(self) -> None:
        for t, (values, dtype, req, grad) in zip(self.tensors, self.copies):
            assert t.dtype == dtype and t.requires_grad == req and t.grad is grad, "an input's flags changed"
            assert torch.equal(t.detach(), values), "an input tensor was modified"


def raising_from(model: nn.Module, k: int) -> nn.Module:
    """``model`` (changed in place and returned) whose forward raises :class:`Boom` from its ``k``-th call on.

    Its class becomes a subclass of its own with a counting ``forward``; module
    names, parameters and hooks are untouched. The count lives on that subclass,
    so deep copies of the model share it. Raising on every call from the
    ``k``-th on (not only the ``k``-th) means a capability that catches one failure
    and retries another way still meets the failure.
    """
    base = type(model)

    def forward(self, x):  # one named argument, so that torch.fx can trace it like the original
        type(self).calls += 1
        if type(self).calls >= k:
            raise Boom(f"forward call {type(self).calls} (raising from call {k} on)")
        return base.forward(self, x)

    model.__class__ = type(f"Raising{base.__name__}", (base,), {"forward": forward, "calls": 0})
    return model


def random_pngs(paths, rng, size: int = 20) -> list[str]:
    """Write a random ``size``×``size`` RGB PNG (pixels from ``rng``, a NumPy Generator) to each path; their names."""
    import numpy as np
    from PIL import Image

    for p in paths:
        Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(p)
    return [str(p) for p in paths]
