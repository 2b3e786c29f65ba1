import numpy as np
import torch
from helpers import TinyNet, seg_probe
from test_dissect_layer import brute_force_dissection
from torch import nn

from recorder import Recorder, RunStore
from recorder.dissect.labels import ConceptLabels
from recorder.probe_pass import ProbeBuffers, layer_shapes, observation_mode, run_probe_pass


def test_buffers_keep_cpu_maps_by_name_and_shape():
    buffers = ProbeBuffers()
    first = buffers.take("conv", (4, 2, 3, 3), "cpu")
    assert buffers.take("conv", (4, 2, 3, 3), torch.device("cpu")) is first
    assert buffers.take("conv", (5, 2, 3, 3), "cpu") is not first  # another shape: a new buffer
    assert buffers.take("conv", (5, 2, 3, 3), "cpu").shape == (5, 2, 3, 3)
    assert buffers.take("other", (4, 2, 3, 3), "cpu") is not first
    assert first.dtype == torch.float32


def test_buffers_make_labels_once_per_probe_and_within_budget():
    seg = torch.randint(0, 3, (4, 2, 5, 5))
    category = torch.tensor([0, 1])
    made = []

    def make():
        made.append(1)
        return ConceptLabels(seg, category, 2)

    buffers, probe, other = ProbeBuffers(), object(), object()
    a = buffers.labels(probe, slice(0, 4), make)
    assert buffers.labels(probe, slice(0, 4), make) is a and len(made) == 1
    buffers.labels(probe, slice(4, 8), make)  # other rows
    buffers.labels(other, slice(0, 4), make)  # another probe: its own labels
    assert len(made) == 3
    tight = ProbeBuffers(label_bytes=a.pixels.numel() * 4 - 1)  # too small to keep them
    tight.labels(probe, slice(0, 4), make)
    tight.labels(probe, slice(0, 4), make)
    assert len(made) == 5


def test_rows_stay_exact_when_buffers_are_reused_across_weights(tmp_path):
    torch.manual_seed(3)
    model = TinyNet(batchnorm=False, dropout=0.0)
    probe = seg_probe()
    expected = []
    with Recorder(model, ["conv1", "block.conv"], probe=probe, store=tmp_path / "r", quantile=0.1, topk=4,
                  batch_size=5, progress=False) as rec:
        for step in range(3):
            expected.append({layer: brute_force_dissection(model, probe, layer, 0.1, 4)
                             for layer in ["conv1", "block.conv"]})
            rec.record(step)
            with torch.no_grad():  # new weights: the next row must not see this row's maps
                for p in model.parameters():
                    p.add_(torch.randn_like(p) * 0.3)
    run = RunStore.open(tmp_path / "r")
    for step, layers in enumerate(expected):
        for layer, (thresholds, iou, top, _) in layers.items():
            stored = run.layer(layer)
            np.testing.assert_allclose(stored.threshold[step], thresholds, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(stored.iou[step].astype(np.float64), iou, atol=1e-3)
            np.testing.assert_array_equal(stored.topk_index[step], top)


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
