"""The engine contract: every engine overrides `Engine.logits`; the shared `Engine.drops` loop gives the same
drops as a one-forward-per-position reference written here, for any subset of positions."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from torch import nn

from cnn_explain.attribution.occlude.approx import drill_down
from cnn_explain.attribution.occlude.engines import (BatchedEngine, Engine, IncrementalEngine, Job, Measure,
                                                     choose_engine, target_scores)
from cnn_explain.attribution.occlude.plan import NodePlan, NodeState
from cnn_explain.attribution.occlude.windows import make_grid


class LoopEngine(Engine):
    """One plain forward per position, the window cut by slicing: the slow, simple reference."""

    name = "loop"

    def logits(self, job: Job, image: int, positions: torch.Tensor) -> torch.Tensor:
        n_cols = job.grid.shape[1]
        rows = []
        for q in positions.tolist():
            i, j = divmod(q, n_cols)
            r0, r1 = int(job.grid.rows[0][i]), int(job.grid.rows[1][i])
            c0, c1 = int(job.grid.cols[0][j]), int(job.grid.cols[1][j])
            x = job.images[image:image + 1].clone()
            x[..., r0:r1 + 1, c0:c1 + 1] = job.baselines[image:image + 1, :, r0:r1 + 1, c0:c1 + 1]
            rows.append(job.model(x))
        return torch.cat(rows)

    def bytes_per_position(self, job: Job) -> int:
        return 1


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(4, 5, 3, stride=2, padding=1), nn.BatchNorm2d(5), nn.ReLU(),
        nn.AvgPool2d(3, 1, padding=1, count_include_pad=False), nn.Flatten(), nn.Linear(5 * 3 * 3, 4),
    ).double().eval()


def _job(model: nn.Module, images: torch.Tensor, batch_size: int | None = 5) -> Job:
    grid = make_grid(tuple(images.shape[-2:]), (3, 4), (2, 3))
    logits = model(images)
    targets = torch.tensor([1, 3][:images.shape[0]])
    return Job(model, images, torch.full_like(images, 0.25), grid, Measure.PROB, None, targets,
               target_scores(logits, Measure.PROB, targets), batch_size, 2**20, False)


@pytest.mark.parametrize("batch_size", [1, 5, None])
def test_every_engine_gives_the_reference_drops_on_a_subset(batch_size):
    model = _net()
    images = torch.rand(2, 3, 11, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    job = _job(model, images, batch_size)
    positions = torch.tensor([0, 3, 4, 7, 11, 12, 14])  # of 5 × 3
    with torch.inference_mode():
        ref = LoopEngine().drops(job, positions)
        engines = [BatchedEngine(), IncrementalEngine(model, images, job.grid, None, None)]
        got = [engine.drops(job, positions) for engine in engines]
    left_out = torch.ones(len(job.grid), dtype=torch.bool)
    left_out[positions] = False
    assert ref.shape == (2, *job.grid.shape)
    flat = ref.reshape(2, -1)
    assert torch.isnan(flat[:, left_out]).all() and not torch.isnan(flat[:, positions]).any()
    assert float(ref.abs().nan_to_num().max()) > 1e-4  # the windows do change the scores
    for drops in got:
        torch.testing.assert_close(drops, ref, rtol=0, atol=1e-12, equal_nan=True)


def test_drill_down_computing_everything_is_exact():
    model = _net()
    images = torch.rand(1, 3, 11, 10, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    job = _job(model, images)
    with torch.inference_mode():
        engine = IncrementalEngine(model, images, job.grid, None, None)
        exact = LoopEngine().drops(job, torch.arange(len(job.grid)))
        full = drill_down(engine, job, 1.0)
        half = drill_down(engine, job, 0.0)
    torch.testing.assert_close(full.drops, exact, rtol=0, atol=1e-12)
    n_rows, n_cols = job.grid.shape
    coarse = sum((i + j) % 2 == 0 for i in range(n_rows) for j in range(n_cols))
    assert (full.positions_computed, full.positions) == (n_rows * n_cols, n_rows * n_cols)
    assert half.positions_computed == coarse == half.last_count
    # a checkerboard position keeps its computed drop; another gets the mean of its computed 4-neighbours
    assert float(half.drops[0, 0, 0]) == pytest.approx(float(exact[0, 0, 0]), rel=0, abs=1e-12)
    mean = float(exact[0, 0, 0] + exact[0, 0, 2] + exact[0, 1, 1]) / 3
    assert float(half.drops[0, 0, 1]) == pytest.approx(mean, rel=0, abs=1e-12)


def test_plan_is_frozen_and_uses_states():
    model = _net()
    images = torch.rand(1, 3, 11, 10, dtype=torch.float64)
    with torch.inference_mode():
        engine = IncrementalEngine(model, images, make_grid((11, 10), (3, 3), (3, 3)), None, None)
    plan = engine.network.plan
    assert {p.state for p in plan.values()} <= set(NodeState)
    entry = next(p for p in plan.values() if p.state is NodeState.PATCH)
    assert isinstance(entry, NodePlan)
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.state = NodeState.FULL


def test_choose_engine_says_why_not_incremental():
    class Branchy(nn.Module):
        def forward(self, x):
            return x.flatten(1)[:, :3] if x.sum() > 0 else x.flatten(1)[:, 3:6]  # data-dependent: not traceable

    images = torch.rand(1, 1, 4, 4)
    grid = make_grid((4, 4), (2, 2), (2, 2))
    with pytest.warns(UserWarning, match="incremental inference is not possible"):
        engine, reason = choose_engine(Branchy(), images, grid, incremental=True)
    assert isinstance(engine, BatchedEngine) and "torch.fx cannot trace" in reason
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose_engine(Branchy(), images, grid, incremental=True, warn=False)[1] == reason
        engine, reason = choose_engine(Branchy(), images, grid, incremental=False)
    assert isinstance(engine, BatchedEngine) and reason is None


def test_graph_is_reused_and_retraced_when_a_module_is_replaced():
    """The traced graph is kept per model; replacing a submodule traces again (results stay exact)."""
    from cnn_explain.attribution import occlusion
    from cnn_explain.attribution.occlude import incremental

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.conv(x).relu().mean((2, 3)))

    model = Net().double().eval()
    x = torch.rand(1, 3, 10, 10, dtype=torch.float64)

    def both():
        inc = occlusion(model, x, window=3, stride=2, target=0, mode="incremental", progress=False)
        plain = occlusion(model, x, window=3, stride=2, target=0, mode="batched", progress=False)
        assert inc.engine == "incremental"
        torch.testing.assert_close(inc.attribution, plain.attribution, rtol=0, atol=1e-12)

    both()
    graph = next(iter(incremental._GRAPHS[model].values()))[0]
    both()
    assert next(iter(incremental._GRAPHS[model].values()))[0] is graph  # reused
    model.conv = nn.Conv2d(3, 4, 5, stride=2).double()
    both()
    assert next(iter(incremental._GRAPHS[model].values()))[0] is not graph
