"""The README's examples run as written."""

import os
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from recorder import RunStore

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(heading: str) -> str:
    """The first ```python block after the README heading `heading`."""
    text = README.read_text()
    start = text.index(heading)
    return re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)


class Net(nn.Module):
    """A model with the layer names the README records."""

    def __init__(self):
        super().__init__()
        self.layer3 = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.layer4 = nn.Sequential(nn.Conv2d(6, 8, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.layer4(self.layer3(x)).mean((2, 3)))


class Heldout(torch.utils.data.Dataset):
    classes = ["a", "b", "c"]

    def __init__(self, n=12):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.rand(n, 3, 8, 8, generator=g), torch.arange(n) % 3

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def test_plain_loop_example_runs_and_metrics_land_at_their_steps(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    logged = []

    def evaluate(model):
        logged.append(float(torch.rand(())))
        return logged[-1]

    data = Heldout(4 * 520)
    loader = [(data.x[i:i + 4], data.y[i:i + 4]) for i in range(0, len(data), 4)]  # 520 batches
    namespace = {"heldout_ds": Heldout(), "model": Net(), "loader": loader, "evaluate": evaluate}
    exec(compile(readme_block("## Recording in a plain training loop"), "README.md", "exec"), namespace)
    run = RunStore.open(os.path.join("runs", "mysweep", "baseline"))
    steps, values = run.scalar("heldout_accuracy")
    assert steps.tolist() == [0, 250, 500] and values.tolist() == logged
    assert np.array_equal(namespace["steps"], steps)
    assert run.steps.tolist() == [0, 100, 200, 300, 400, 500, 519, 520]
    metric = run.metric("heldout_accuracy")  # the row-aligned view: NaN at rows without a value
    assert metric[0] == logged[0] and metric[5] == logged[2] and np.isnan(metric[1:5]).all()
