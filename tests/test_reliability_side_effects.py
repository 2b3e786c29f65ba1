"""Recording never changes the training it watches: bitwise-equal weights on CPU.

The training loop below draws from every global RNG (torch for shuffling, flips and
crops; NumPy and Python `random` for brightness and noise), uses BatchNorm and Dropout,
and is recorded online, with probe passes and with Network Dissection, plus an explicit
`record()` in the middle. Weights, optimizer state, BatchNorm statistics and the RNG
states at the end must equal those of the same loop without a Recorder.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import TinyNet, seg_probe, tiny_probe
from test_reliability_crash import one_thread  # noqa: F401 (autouse fixture)
from torch.utils.data import DataLoader, TensorDataset

from recorder import Recorder, RunStore


def augment(x: torch.Tensor) -> torch.Tensor:
    """Random flips and crops (torch RNG), brightness (NumPy RNG), noise switch (Python RNG)."""
    flip = torch.rand(x.shape[0]) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    dy, dx = torch.randint(0, 3, (2,)).tolist()
    x = F.pad(x, (1, 1, 1, 1), mode="reflect")[:, :, dy:dy + 8, dx:dx + 8]
    x = x * float(np.random.uniform(0.8, 1.2))
    if random.random() < 0.5:
        x = x + 0.1 * torch.randn_like(x)
    return x


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def fit(recorder_kwargs: dict | None, store=None, epochs: int = 3):
    """Train TinyNet (BatchNorm, Dropout) with shuffling and augmentation; return what it left."""
    seed_everything(7)
    model = TinyNet(batchnorm=True, dropout=0.3)
    data = TensorDataset(torch.randn(48, 3, 8, 8), torch.randint(0, 3, (48,)))
    loader = DataLoader(data, batch_size=8, shuffle=True)  # the sampler draws from torch's RNG
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    rec = None if recorder_kwargs is None else Recorder(model, store=store, progress=False, **recorder_kwargs)
    step = 0
    for epoch in range(epochs):
        for x, y in loader:
            model.train()
            logits = model(augment(x))
            loss = F.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if rec is not None:
                rec.step(step, labels=y, logits=logits, epoch=epoch)
                if step == 8:
                    rec.record(9, metrics={"extra": 1.0})  # an explicit probe pass between steps
                    step += 1
            step += 1
    if rec is not None:
        rec.close()
    return {"model": model.state_dict(), "opt": opt.state_dict()["state"], "torch_rng": torch.get_rng_state(),
            "numpy_rng": np.random.get_state()[1], "python_rng": random.getstate(), "training": model.training}


def assert_same(a, b, where="") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where  # bitwise, not close
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), where
    else:
        assert a == b, where


SETUPS = {
    "online, probe and dissection": dict(layers=["conv1", "bn", "block.conv", "fc"], probe=seg_probe(), every=3),
    "probe pass only, every step": dict(layers=["block.conv"], probe=tiny_probe(), every=1, online=False),
    "online only": dict(layers=["conv1", "fc"], classes=["a", "b", "c"], every=4),
}


@pytest.mark.parametrize("kwargs", SETUPS.values(), ids=SETUPS.keys())
def test_weights_and_rng_states_are_bitwise_equal_with_and_without_recording(tmp_path, kwargs):
    plain = fit(None)
    recorded = fit(kwargs, store=tmp_path / "run")
    assert_same(plain, recorded)
    run = RunStore.open(tmp_path / "run")
    assert run.n_committed >= 4 and 9 in run.steps and run.steps[-1] == 3 * 6  # 18 batches, one step skipped
    if kwargs.get("probe") is not None and kwargs["probe"].has_seg:
        assert run.layer("block.conv").has("iou")
