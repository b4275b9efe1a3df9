"""Several threads, one model: results equal to the serial calls, the model and global state as found.

Guided saliency, occlusion, Grad-CAM and feature maps each change the model's state for a while (eval mode,
frozen parameters, hooks, torch function modes); run from four threads at once on one TinyResNet that is in
training mode (so a forward outside eval mode would change its BatchNorm statistics), every result must equal
the same call made alone, and the model must come back exactly as it was.
"""

from __future__ import annotations

import gc
import threading
import weakref

import pytest
import torch
from conftest import GlobalState, TinyResNet, _seeded

from cnn_explain.attribution import grad_cam, occlusion, saliency
from cnn_explain.features import feature_maps
from cnn_explain.hooks import capture, hook_count, model_lock
from cnn_explain import _state

TARGETS = [0, 3, 4]
CALLS = {
    "guided": lambda m, x: saliency(m, x, target=TARGETS, method="guided", progress=False).attribution,
    "occlusion": lambda m, x: occlusion(m, x, target=TARGETS, window=4, stride=2, progress=False).attribution,
    "grad_cam": lambda m, x: grad_cam(m, x, target=TARGETS).cam,
    "feature_maps": lambda m, x: torch.cat([t.flatten(1) for t in feature_maps(m, x).values()], 1),
}


def _in_threads(model: torch.nn.Module, x: torch.Tensor, threads: int, repeats: int) -> list[dict[str, list]]:
    """Each thread runs every call ``repeats`` times, starting at a different one; all start together."""
    barrier = threading.Barrier(threads)
    results: list[dict[str, list]] = [{name: [] for name in CALLS} for _ in range(threads)]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            names = list(CALLS)[i % len(CALLS):] + list(CALLS)[:i % len(CALLS)]
            barrier.wait()
            for _ in range(repeats):
                for name in names:
                    results[i][name].append(CALLS[name](model, x))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in pool), "a thread did not finish (deadlock?)"
    if errors:
        raise errors[0]
    return results


@pytest.mark.parametrize("round_", range(3))
def test_four_threads_equal_the_serial_calls_and_leave_the_model_as_found(round_, images, snapshot):
    model = _seeded(TinyResNet, seed=round_).train()  # BatchNorm would update its statistics in training mode
    serial = {name: call(model, images) for name, call in CALLS.items()}
    snap, glob = snapshot(model), GlobalState()
    results = _in_threads(model, images, threads=4, repeats=2)
    snap.assert_unchanged()  # training flags, parameters, BatchNorm statistics, requires_grad, .grad, hooks
    glob.assert_unchanged()  # torch's RNG, grad mode, function modes, ...
    assert all(m.training for m in model.modules())
    for per_thread in results:
        for name, values in per_thread.items():
            assert len(values) == 2
            for v in values:
                torch.testing.assert_close(v, serial[name], rtol=0, atol=1e-6, msg=f"{name} differs from serial")


def test_a_capture_records_only_the_calls_of_its_own_thread(tiny_net, images):
    with torch.no_grad(), capture(tiny_net, ["conv1", "fc"]) as rec:
        other = threading.Thread(target=lambda: tiny_net(images[:1]))  # a forward of another thread, no lock
        other.start()
        other.join()
        assert len(rec) == 0
        tiny_net(images)
    assert list(rec) == ["conv1", "fc"] and rec["conv1"].shape[0] == 3  # plain names: one call each, ours
    assert hook_count(tiny_net) == 0


def test_capture_and_preserved_hold_the_model_lock(tiny_net, images):
    lock = model_lock(tiny_net)
    assert model_lock(tiny_net) is lock and "lock" not in " ".join(vars(tiny_net))  # nothing on the model
    entered = threading.Event()

    def other() -> None:
        with lock:
            entered.set()

    with capture(tiny_net, "conv1"):
        t = threading.Thread(target=other)
        t.start()
        assert not entered.wait(0.2)  # waits while the capture is open
    assert entered.wait(5)
    t.join()


def test_the_lock_goes_away_with_its_model():
    net = torch.nn.Linear(2, 2)
    model_lock(net)
    alive = weakref.ref(net)
    assert any(k is net for k in list(_state._LOCKS.keys()))
    del net
    gc.collect()
    assert alive() is None  # the table of locks does not keep the model alive
