"""Recording models of every kind a user brings, each checked against a per-image numpy
computation of DESIGN.md's selectivity rule (signed layers above the unit's floor)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import VisionTransformer

from recorder import ProbeSet, Recorder, RunStore

CLASSES = ["zero", "one", "two"]


def probe(channels=3, n=18, size=16, seed=0) -> ProbeSet:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(n, size, size, channels), dtype=np.uint8)
    return ProbeSet(pixels, np.arange(n) % 3, CLASSES, mean=0.5, std=0.25)


class FunctionalReLU(nn.Module):
    """The most common way to write a model: convs followed by F.relu, so the conv outputs are signed."""

    def __init__(self, channels=3):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.fc = nn.Linear(8, 3)
        with torch.no_grad():
            self.fc.bias.copy_(torch.tensor([-1.0, 0.0, 1.0]))  # logits of both signs, as after training

    def forward(self, x):
        x = F.relu(self.bn(self.conv1(x)))
        x = F.relu(self.conv2(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class RowSequence(nn.Module):
    """Image rows as a sequence: an LSTM, then self-attention (both return tuples)."""

    def __init__(self, channels=1, size=16):
        super().__init__()
        self.lstm = nn.LSTM(channels * size, 10, batch_first=True)
        self.attn = nn.MultiheadAttention(10, num_heads=2, batch_first=True)
        self.fc = nn.Linear(10, 3)

    def forward(self, x):  # (B, C, H, W) -> H steps of C*W features
        seq, _ = self.lstm(x.permute(0, 2, 1, 3).flatten(2))
        mixed, _ = self.attn(seq, seq, seq)
        return self.fc(mixed.mean(1))


def tiny_vit() -> nn.Module:
    return VisionTransformer(image_size=16, patch_size=4, num_layers=1, num_heads=2, hidden_dim=8, mlp_dim=16,
                             num_classes=3)


def per_image_responses(model, probe, layer) -> np.ndarray:
    """`[N, K]`: each image through the model alone, the layer's output reduced by hand."""
    name, _, index = layer.partition("[")
    module = dict(model.named_modules())[name]
    seen = []
    handle = module.register_forward_hook(lambda m, i, o: seen.append(o[int(index[:-1])] if index else o))
    model.eval()
    rows = []
    with torch.no_grad():
        for i in range(len(probe)):
            model(probe[i]["image"][None])
            out = seen.pop()[0].double().numpy()
            if out.ndim == 3:  # (K, H, W) conv: spatial mean
                rows.append([out[k].mean() for k in range(out.shape[0])])
            elif out.ndim == 2:  # (T, K) tokens: mean over tokens
                rows.append([out[:, k].mean() for k in range(out.shape[1])])
            else:
                rows.append(list(out))
    handle.remove()
    return np.array(rows)


def rule_by_hand(responses: np.ndarray, labels: np.ndarray):
    """DESIGN.md by loops: signed when any response < 0; SI on mu - r_min (signed) or max(mu, 0)."""
    signed = bool((responses < 0).any())
    si, dead = [], []
    for k in range(responses.shape[1]):
        r = responses[:, k]
        floor = r.min()
        constant = r.max() - floor <= 1e-7 + 1e-5 * abs(floor)
        means = [r[labels == c].mean() for c in range(len(CLASSES))]
        plus = [m - floor if signed else max(m, 0.0) for m in means]
        top = max(plus)
        rest = (sum(plus) - top) / (len(plus) - 1)
        dead.append(constant)
        si.append(0.0 if constant or top <= 1e-7 else (top - rest) / (top + rest + 1e-7))
    return signed, np.array(si), np.array(dead)


CASES = [
    ("conv before a functional ReLU", FunctionalReLU, "conv2", 3, True),
    ("BatchNorm output", FunctionalReLU, "bn", 3, True),
    ("logits", FunctionalReLU, "fc", 3, True),
    ("ViT tokens", tiny_vit, "encoder.layers.encoder_layer_0", 3, True),
    ("LSTM [0]", RowSequence, "lstm[0]", 1, True),
    ("MultiheadAttention [0]", RowSequence, "attn[0]", 1, True),
    ("1-channel probe", lambda: FunctionalReLU(channels=1), "conv1", 1, True),
]


@pytest.mark.parametrize("make, layer, channels, signed", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_recorded_selectivity_follows_the_rule(tmp_path, capsys, make, layer, channels, signed):
    torch.manual_seed(0)
    model, data = make(), probe(channels)
    with Recorder(model, [layer], probe=data, store=tmp_path / "run", progress=False, batch_size=5) as rec:
        rec.record(0)
    recorded = RunStore.open(tmp_path / "run").layer(layer)
    responses = per_image_responses(model, data, layer)
    by_hand_signed, si, dead = rule_by_hand(responses, data.labels.numpy())
    assert by_hand_signed == signed == recorded.signed
    np.testing.assert_allclose(recorded.response_min[0], responses.min(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(recorded.selectivity("si")[0], si, rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(recorded.dead()[0], dead)
    assert not dead.all()  # signed units are not taken for dead
    note = capsys.readouterr().err
    assert note.count(f"layer {layer!r} is signed") == 1  # the note, once
    assert ("model's outputs (logits)" in note) == (layer == "fc")  # nothing to change for logits


def test_functional_relu_conv_is_selective_where_morcos_sees_dead_units(tmp_path):
    """The worst case of the old rule: a conv followed by F.relu has negative class means,
    which max(mu, 0) turns into dead units with SI 0."""
    torch.manual_seed(1)
    model, data = FunctionalReLU(), probe()
    with torch.no_grad():
        model.conv2.bias.fill_(-3.0)  # every response below 0
    with Recorder(model, ["conv2"], probe=data, store=tmp_path / "run", progress=False) as rec:
        rec.record(0)
    layer = RunStore.open(tmp_path / "run").layer("conv2")
    mu = layer.class_means()[0]
    assert (mu < 0).all() and layer.signed
    assert not layer.dead()[0].any() and (layer.selectivity()[0] > 0).all()
