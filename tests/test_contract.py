"""The contract every capability keeps, generated from ONE list of capabilities.

For each capability (every public ``Explainer`` method and the function it calls):

* a normal run and a run whose model raises inside ``forward`` both leave the
  model (parameters, ``training`` flags, ``requires_grad``, ``.grad``, hooks), the
  input tensors and the global state (torch / NumPy / Python RNG, grad and
  inference mode, default dtype, thread count, global hooks, torch function
  modes, matplotlib's backend) exactly as they were found;
* the façade gives the same result as the function.

A new capability gets the contract by being added to ``CAPABILITIES``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from cnn_explain import Explainer, explain
from cnn_explain.prediction import Prediction

from conftest import Boom, GlobalState, InputSnapshot, ModelSnapshot, TinyNet, _seeded, raising_from

SHAPE = (3, 12, 10)


@dataclass(frozen=True)
class Inputs:
    """What a capability is given: images, a small labelled data set, a folder to write into."""

    x: torch.Tensor
    data: torch.Tensor
    labels: torch.Tensor
    folder: Path

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return self.x, self.data, self.labels


@dataclass(frozen=True)
class Capability:
    """One capability: the façade call, the function call it stands for, and where its model may fail.

    Attributes:
        name: the ``Explainer`` method.
        facade: ``(explainer, inputs) -> result``.
        function: ``(model, inputs) -> result``, the same call without the façade.
        fails_from: the forward call from which the failing run's model raises;
            None for a capability that never runs the model (the failing run then
            checks that it indeed does not).
        same: ``(facade result, function result)`` -> None, asserting they are equal.
    """

    name: str
    facade: Callable[[Explainer, Inputs], Any]
    function: Callable[[nn.Module, Inputs], Any]
    fails_from: int | None = 1
    same: Callable[[Any, Any], None] | None = None


# ----------------------------------------------------------------------------- the functions
def _summary(model, inp):
    from cnn_explain.summary import summarize

    return summarize(model, SHAPE)


def _predict(model, inp):
    """``predict`` calls no function: the reference is the softmax top-k of the model in eval mode."""
    from cnn_explain.hooks import preserved

    with preserved(model, eval=True), torch.no_grad():
        probs = model(inp.x).softmax(dim=1)
    top = probs.topk(3, dim=1)
    return Prediction(top.indices, top.values, [[str(i) for i in row] for row in top.indices.tolist()])


def _feature_maps(model, inp):
    from cnn_explain.features import feature_maps

    return feature_maps(model, inp.x, layers=["conv1", "relu2"])


def _filters(model, inp):
    from cnn_explain.features import filters

    return filters(model, "conv2")


def _maximize(model, inp):
    from cnn_explain.features import maximize

    return maximize(model, "conv2", [0, 3], steps=2, input_shape=SHAPE, progress=False)


def _arithmetic(model, inp):
    from cnn_explain.features import arithmetic

    return arithmetic(model, inp.x, "conv2", 1, 1, 2)


def _receptive_field(model, inp):
    from cnn_explain.layers import receptive_field

    return receptive_field(model, "conv2", 1, 2, input_shape=SHAPE)


def _occlusion(model, inp):
    from cnn_explain.attribution import occlusion

    return occlusion(model, inp.x, window=4, stride=3, progress=False)


def _saliency(model, inp):
    from cnn_explain.attribution import saliency

    return saliency(model, inp.x, method="guided", smooth=2, progress=False)


def _grad_cam(model, inp):
    from cnn_explain.attribution import grad_cam

    return grad_cam(model, inp.x, layer="conv2", guided=True)


def _integrated_gradients(model, inp):
    from cnn_explain.attribution.integrated_gradients import integrated_gradients

    return integrated_gradients(model, inp.x, baseline="blur", steps=6, internal_batch_size=5, progress=False)


def _cam(model, inp):
    from cnn_explain.attribution.cam_family import cam

    # precision="low": bfloat16 autocast where native, channels-last input: both must be left as found
    return cam(model, inp.x, method="score-cam", layer="conv2", batch_size=4, progress=False, precision="low")


def _sanity_check(model, inp):
    from cnn_explain.attribution import sanity_check

    return sanity_check(model, inp.x, method="gradient", progress=False)


def _embed(model, inp):
    from cnn_explain.embedding import embed

    return embed(model, (inp.data, inp.labels), method="pca", batch_size=8, progress=False)


def _report(model, inp):
    from cnn_explain.report import write_report

    return write_report(explain(model), inp.x, out=inp.folder / "function", sections=["summary", "predictions"],
                        progress=False)


def _same_report(a, b) -> None:
    """Two reports of the same inputs: equal manifests except the time each section took; same figures."""
    def strip(manifest):
        return {**manifest, "sections": [{k: v for k, v in s.items() if k != "seconds"} for s in manifest["sections"]]}

    assert strip(a.manifest) == strip(b.manifest)
    assert [f.file for f in a.figures] == [f.file for f in b.figures]


CAPABILITIES = [
    Capability("summary", lambda ex, inp: ex.summary(SHAPE), _summary),
    Capability("predict", lambda ex, inp: ex.predict(inp.x, k=3), _predict),
    Capability("feature_maps", lambda ex, inp: ex.feature_maps(inp.x, layers=["conv1", "relu2"]), _feature_maps),
    Capability("filters", lambda ex, inp: ex.filters("conv2"), _filters, fails_from=None),
    Capability("maximize", lambda ex, inp: ex.maximize("conv2", [0, 3], steps=2, input_shape=SHAPE, progress=False),
               _maximize, fails_from=2),
    Capability("arithmetic", lambda ex, inp: ex.arithmetic(inp.x, "conv2", 1, 1, 2), _arithmetic),
    Capability("receptive_field", lambda ex, inp: ex.receptive_field("conv2", 1, 2, input_shape=SHAPE),
               _receptive_field),
    Capability("occlusion", lambda ex, inp: ex.occlusion(inp.x, window=4, stride=3, progress=False), _occlusion,
               fails_from=2),
    Capability("saliency", lambda ex, inp: ex.saliency(inp.x, method="guided", smooth=2, progress=False), _saliency,
               fails_from=2),
    Capability("grad_cam", lambda ex, inp: ex.grad_cam(inp.x, layer="conv2", guided=True), _grad_cam, fails_from=2),
    Capability("integrated_gradients",
               lambda ex, inp: ex.integrated_gradients(inp.x, baseline="blur", steps=6, internal_batch_size=5,
                                                       progress=False),
               _integrated_gradients, fails_from=2),
    Capability("cam", lambda ex, inp: ex.cam(inp.x, method="score-cam", layer="conv2", batch_size=4,
                                             progress=False, precision="low"), _cam, fails_from=2),
    Capability("sanity_check", lambda ex, inp: ex.sanity_check(inp.x, method="gradient", progress=False),
               _sanity_check, fails_from=3),
    Capability("embed", lambda ex, inp: ex.embed((inp.data, inp.labels), method="pca", batch_size=8, progress=False),
               _embed, fails_from=2),
    Capability("report", lambda ex, inp: ex.report(inp.x, out=inp.folder / "facade",
                                                   sections=["summary", "predictions"], progress=False),
               _report, fails_from=2, same=_same_report),
]

# capabilities that do not keep the contract today: (capability, run) -> the precise reason
KNOWN_FAILURES: dict[tuple[str, str], str] = {}


def _cases(run: str) -> list:
    cases = []
    for cap in CAPABILITIES:
        reason = KNOWN_FAILURES.get((cap.name, run))
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        cases.append(pytest.param(cap, id=cap.name, marks=marks))
    return cases


def test_every_public_method_is_in_the_list():
    public = {n for n, v in vars(Explainer).items() if callable(v) and not n.startswith("_")} - {"prepare", "label"}
    assert public == {c.name for c in CAPABILITIES}


# ----------------------------------------------------------------------------- the runs
def _model() -> nn.Module:
    """TinyNet in train mode with a frozen bias and a ``.grad`` present: all of it must come back as is."""
    model = _seeded(TinyNet).train()
    model.fc.bias.requires_grad_(False)
    model.conv1.weight.grad = torch.full_like(model.conv1.weight, 0.5)
    return model


def _inputs(tmp_path: Path) -> Inputs:
    g = torch.Generator().manual_seed(3)
    return Inputs(torch.rand(2, *SHAPE, generator=g), torch.rand(16, *SHAPE, generator=g),
                  torch.arange(16) % 4, tmp_path)


def _check_all(model_snap: ModelSnapshot, input_snap: InputSnapshot, state: GlobalState) -> None:
    model_snap.assert_unchanged()
    input_snap.assert_unchanged()
    state.assert_unchanged()


@pytest.mark.parametrize("via", ["facade", "function"])
@pytest.mark.parametrize("cap", _cases("normal"))
def test_normal_run_leaves_everything_as_found(cap: Capability, via: str, tmp_path):
    model, inp = _model(), _inputs(tmp_path)
    snaps = ModelSnapshot(model), InputSnapshot(*inp.tensors()), GlobalState()
    if via == "facade":
        cap.facade(explain(model), inp)
    else:
        cap.function(model, inp)
    _check_all(*snaps)


@pytest.mark.parametrize("via", ["facade", "function"])
@pytest.mark.parametrize("cap", _cases("failing"))
def test_failing_forward_leaves_everything_as_found(cap: Capability, via: str, tmp_path):
    inp = _inputs(tmp_path)
    model = raising_from(_model(), cap.fails_from or 1)
    snaps = ModelSnapshot(model), InputSnapshot(*inp.tensors()), GlobalState()
    call = (lambda: cap.facade(explain(model), inp)) if via == "facade" else (lambda: cap.function(model, inp))
    if cap.fails_from is None:
        call()  # the capability never runs the model
        assert type(model).calls == 0
    else:
        with pytest.raises(Boom):
            call()
    _check_all(*snaps)
    assert not any(p.name != "function" and p.name != "facade" for p in tmp_path.iterdir()), \
        "a temporary file or folder was left behind"
    assert not (tmp_path / "facade").exists() and not (tmp_path / "function").exists()


@pytest.mark.parametrize("cap", _cases("facade == function"))
def test_facade_equals_function(cap: Capability, tmp_path):
    inp = _inputs(tmp_path)
    model = _model()
    got = cap.facade(explain(model, class_names=None), inp)
    expected = cap.function(model, inp)
    (cap.same or _assert_same)(got, expected)


# ----------------------------------------------------------------------------- equality of results
def _assert_same(a: Any, b: Any, where: str = "result") -> None:
    """Deep, exact equality of results: dataclasses field by field, tensors and arrays bit for bit (NaN == NaN)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert a.shape == b.shape and a.dtype == b.dtype, f"{where}: {a.shape}/{a.dtype} != {b.shape}/{b.dtype}"
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=f"{where} differs")
    elif isinstance(a, np.ndarray):
        assert a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), f"{where} differs"
    elif dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            _assert_same(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, Mapping):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for k in a:
            _assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths {len(a)} != {len(b)}"
        for i, (u, v) in enumerate(zip(a, b)):
            _assert_same(u, v, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), f"{where}: nan != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


# ----------------------------------------------------------------------------- the global-state check itself
def _use_pdf_backend() -> None:
    import matplotlib

    matplotlib.use("pdf")


GLOBAL_CHANGES: dict[str, Callable[[], Any]] = {
    "torch rng": lambda: torch.rand(1),
    "numpy rng": lambda: np.random.rand(),
    "python rng": lambda: __import__("random").random(),
    "grad mode": lambda: torch.set_grad_enabled(not torch.is_grad_enabled()),
    "default dtype": lambda: torch.set_default_dtype(torch.float64),
    "threads": lambda: torch.set_num_threads(torch.get_num_threads() + 1),
    "matplotlib backend": _use_pdf_backend,
    "matplotlib rcParams": lambda: __import__("matplotlib").rcParams.__setitem__("backend", "svg"),
}


@pytest.mark.parametrize("change", list(GLOBAL_CHANGES), ids=list(GLOBAL_CHANGES))
def test_global_state_check_sees_each_change(change: str):
    """GlobalState, which every contract run uses, notices each kind of change (and it is undone here)."""
    import random

    import matplotlib

    saved = (torch.random.get_rng_state(), np.random.get_state(), random.getstate(), torch.is_grad_enabled(),
             torch.get_default_dtype(), torch.get_num_threads(), matplotlib.get_backend())
    state = GlobalState()
    try:
        GLOBAL_CHANGES[change]()
        with pytest.raises(AssertionError):
            state.assert_unchanged()
    finally:
        torch.random.set_rng_state(saved[0])
        np.random.set_state(saved[1])
        random.setstate(saved[2])
        torch.set_grad_enabled(saved[3])
        torch.set_default_dtype(saved[4])
        torch.set_num_threads(saved[5])
        matplotlib.use(saved[6])
    state.assert_unchanged()


def test_smoothgrad_does_not_depend_on_the_default_dtype():
    """SmoothGrad draws its noise in the input's dtype: the same map under a float64 default dtype."""
    from cnn_explain.attribution import saliency

    model, x = _seeded(TinyNet), _inputs(Path(".")).x
    before = saliency(model, x, method="guided", smooth=4, noise=0.2, seed=5, progress=False)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        state = GlobalState()
        under = saliency(model, x, method="guided", smooth=4, noise=0.2, seed=5, progress=False)
        state.assert_unchanged()
    finally:
        torch.set_default_dtype(old)
    assert under.attribution.dtype == before.attribution.dtype == torch.float32
    _assert_same(under, before)
