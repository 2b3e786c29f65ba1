import torch

from recorder.dissect.labels import ConceptLabels
from recorder.probe_buffers import ProbeBuffers


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
    tight = ProbeBuffers(label_bytes=a.seg.numel() * 4)  # too small for seg and packed ids together
    tight.labels(probe, slice(0, 4), make)
    tight.labels(probe, slice(0, 4), make)
    assert len(made) == 5
