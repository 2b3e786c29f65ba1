import numpy as np
import torch
from helpers import TinyNet, seg_probe
from torch import nn

from recorder import Recorder, RunStore
from recorder.probe_pass import layer_shapes, observation_mode, run_probe_pass


def test_rows_with_reused_buffers_equal_rows_of_a_fresh_recorder(tmp_path):
    torch.manual_seed(3)
    model = TinyNet(batchnorm=False, dropout=0.0)
    probe = seg_probe()
    options = dict(probe=probe, quantile=0.1, topk=4, batch_size=5, progress=False)
    with Recorder(model, ["conv1", "block.conv"], store=tmp_path / "reused", **options) as rec:
        for step in range(3):
            rec.record(step)  # the buffers of the row before, refilled
            with Recorder(model, ["conv1", "block.conv"], store=tmp_path / f"fresh{step}", **options) as fresh:
                fresh.record(step)
            with torch.no_grad():  # new weights: the next row must not see this row's maps
                for p in model.parameters():
                    p.add_(torch.randn_like(p) * 0.3)
    reused = RunStore.open(tmp_path / "reused")
    for step in range(3):
        fresh = RunStore.open(tmp_path / f"fresh{step}")
        for layer in ["conv1", "block.conv"]:
            for name in ["threshold", "iou", "topk_index", "topk_value", "topk_map"]:
                np.testing.assert_array_equal(getattr(reused.layer(layer), name)[step],
                                              getattr(fresh.layer(layer), name)[0], err_msg=(step, layer, name))
        assert not np.array_equal(reused.layer("conv1").threshold[step], reused.layer("conv1").threshold[step - 1])


class ConvThenInplaceReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)  # overwrites the conv's output after its hook ran
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).mean((2, 3)))


def test_maps_are_copied_before_an_inplace_activation_changes_them():
    torch.manual_seed(0)
    model = ConvThenInplaceReLU()
    probe = seg_probe(n=9)
    shapes = layer_shapes(model, probe, ["conv"], torch.device("cpu"))
    for cache_bytes in (1 << 30, 0):  # maps kept for pass two, or one batch at a time
        with observation_mode(model):
            _, _, dissections = run_probe_pass(model, probe, ["conv"], shapes, torch.device("cpu"),
                                               batch_size=4, quantile=0.5, cache_bytes=cache_bytes,
                                               progress=False)
        with torch.no_grad():
            before = model.conv(probe.batch(range(len(probe))))  # (N, K, H, W), signed
        median = [np.quantile(before[:, k].numpy().ravel(), 0.5) for k in range(4)]
        assert (np.array(median) < 0).any()  # after the ReLU these would read 0
        np.testing.assert_allclose(dissections["conv"].thresholds.numpy(), median, rtol=1e-5, atol=1e-6)
