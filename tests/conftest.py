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
