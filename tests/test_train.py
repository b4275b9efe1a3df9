"""train.py: determinism, untouched global state, checkpoints, and the digits accuracy promise."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from cnn_explain.data import load_digits
from cnn_explain.train import evaluate, fit, load_checkpoint, pretrained_digits_cnn, save_checkpoint


def _tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Dropout(0.3), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def _data(n: int = 40):
    g = torch.Generator().manual_seed(5)
    x = torch.rand(n, 1, 8, 8, generator=g)
    y = (x[:, 0, :4].mean((1, 2)) * 3).long().clamp(0, 2)
    return x, y


def test_fit_is_deterministic_and_leaves_global_state():
    data = _data()
    a, b, c = _tiny(), _tiny(), _tiny()
    a.eval()  # flags must come back as found
    rng, threads = torch.get_rng_state(), torch.get_num_threads()
    ha = fit(a, data, epochs=2, lr=0.05, batch_size=16, seed=3, progress=False, num_threads=1)
    assert torch.equal(torch.get_rng_state(), rng) and torch.get_num_threads() == threads
    assert not any(m.training for m in a.modules()) and all(p.grad is None for p in a.parameters())
    fit(b, torch.utils.data.TensorDataset(*data), epochs=2, lr=0.05, batch_size=16, seed=3, progress=False,
        num_threads=1)
    fit(c, data, epochs=2, lr=0.05, batch_size=16, seed=4, progress=False, num_threads=1)
    for (k, va), vb, vc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(va, vb), k
    assert any(not torch.equal(va, vc) for va, vc in zip(a.state_dict().values(), c.state_dict().values()))
    assert len(ha.loss) == len(ha.train_accuracy) == 2 and ha.settings["seed"] == 3


def test_fit_generic_dataset_matches_and_adam_learns():
    x, y = _data(60)
    model = _tiny()
    before = evaluate(model, (x, y))
    h = fit(model, (x, y), epochs=10, lr=1e-2, optimizer="adam", batch_size=20, val_data=(x, y), progress=False,
            schedule="cosine", num_threads=1)
    assert h.loss[-1] < h.loss[0] and h.val_accuracy[-1] > before and len(h.val_accuracy) == 10


def test_evaluate_by_hand_and_flags():
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 2, bias=False)).train()
    with torch.no_grad():
        model[1].weight.copy_(torch.eye(2))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.0, 3.0]]).reshape(4, 1, 1, 2)
    y = torch.tensor([0, 1, 1, 1])  # predictions 0, 1, 0, 1
    assert evaluate(model, (x, y), batch_size=3) == 0.75 and model.training


def test_fit_bad_arguments():
    with pytest.raises(ValueError, match="optimizer"):
        fit(_tiny(), _data(), epochs=1, lr=0.1, optimizer="rmsprop", progress=False)
    with pytest.raises(ValueError, match="epochs"):
        fit(_tiny(), _data(), epochs=0, lr=0.1, progress=False)
    with pytest.raises(TypeError, match="train_data"):
        fit(_tiny(), [1, 2, 3], epochs=1, lr=0.1, progress=False)
    with pytest.raises(ValueError, match="lr"):
        fit(_tiny(), _data(), epochs=1, lr=-1, progress=False)


def test_checkpoint_round_trip_and_errors(tmp_path):
    a, b = _tiny(0), _tiny(1)
    path = save_checkpoint(a, tmp_path / "sub" / "a.pt")
    load_checkpoint(b, path)
    assert all(torch.equal(va, vb) for va, vb in zip(a.state_dict().values(), b.state_dict().values()))
    other = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))  # Linear at 3, not 4
    with pytest.raises(ValueError, match=r"missing keys \['3.bias', '3.weight'\], unexpected keys \['4.bias', '4.weight'\]"):
        load_checkpoint(other, path)
    wrong = nn.Sequential(nn.Conv2d(1, 5, 3), nn.ReLU(), nn.Dropout(), nn.Flatten(), nn.Linear(5 * 6 * 6, 3))
    with pytest.raises(ValueError, match="shapes differ"):
        load_checkpoint(wrong, path)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(b, tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(b, tmp_path / "missing.pt")


@pytest.mark.slow
def test_pretrained_digits_cnn_accuracy_and_cache(tmp_path):
    start = time.perf_counter()
    model = pretrained_digits_cnn(cache_dir=tmp_path)
    trained_in = time.perf_counter() - start
    acc = evaluate(model, load_digits("test"))
    print(f"digits CNN: trained in {trained_in:.1f} s, test accuracy {acc:.2%}")
    assert acc >= 0.95 and not model.training
    files = list(tmp_path.glob("digits_cnn-*.pt"))
    assert len(files) == 1
    again = pretrained_digits_cnn(cache_dir=tmp_path)  # loaded from the cache, identical weights
    assert all(torch.equal(u, v) for u, v in zip(model.state_dict().values(), again.state_dict().values()))
