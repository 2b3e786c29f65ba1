import json
import os
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import CLASSES, TinyNet, batches, seg_probe, tiny_probe
from torch import nn

from recorder import Recorder, RunStore
from recorder.hooks import UnknownLayerError


def brute_force_responses(model, probe, layer):
    """Per-image (mean, max) of a layer's units, one image at a time, by plain indexing."""
    outputs = []
    handle = dict(model.named_modules())[layer].register_forward_hook(lambda m, i, o: outputs.append(o))
    model.eval()
    means, maxes, preds = [], [], []
    with torch.no_grad():
        for i in range(len(probe)):
            logits = model(probe[i]["image"][None])
            out = outputs.pop()[0].numpy().astype(np.float64)  # (K, H, W) or (K,)
            if out.ndim == 3:
                means.append([out[k].sum() / out[k].size for k in range(out.shape[0])])
                maxes.append([out[k].max() for k in range(out.shape[0])])
            else:
                means.append(list(out))
                maxes.append(list(out))
            preds.append(int(np.argmax(logits[0].numpy())))
    handle.remove()
    return np.array(means), np.array(maxes), np.array(preds)


def brute_force_si(mu_column, responses, signed):
    """DESIGN.md's SI of one unit from its class means and its per-image responses: above
    the unit's smallest response when the layer is signed, Morcos' max(mu, 0) otherwise."""
    floor = min(responses)
    if max(responses) - floor <= 1e-7 + 1e-5 * abs(floor):
        return 0.0  # the same response on every image: dead
    valid = [v - floor if signed else max(v, 0.0) for v in mu_column if not np.isnan(v)]
    top = max(valid)
    if top <= 1e-7:
        return 0.0
    rest = (sum(valid) - top) / (len(valid) - 1)
    return (top - rest) / (top + rest + 1e-7)


@pytest.mark.parametrize("layer", ["conv1", "block.conv", "block.relu", "fc"])
def test_class_means_selectivity_dominant_equal_brute_force(tmp_path, layer):
    torch.manual_seed(0)
    model = TinyNet(batchnorm=False, dropout=0.0)
    probe = tiny_probe(n=21)
    with Recorder(model, [layer], probe=probe, store=tmp_path / "run", progress=False, batch_size=5) as rec:
        rec.record(0)
    run = RunStore.open(tmp_path / "run")
    means, maxes, preds = brute_force_responses(model, probe, layer)
    labels = np.array([probe[i]["label"] for i in range(len(probe))])
    K = means.shape[1]
    mu_true = np.array([[means[labels == c, k].mean() for k in range(K)] for c in range(3)])
    mu_pred = np.array([[means[preds == c, k].mean() if (preds == c).any() else np.nan
                         for k in range(K)] for c in range(3)])
    rec_layer = run.layer(layer)
    np.testing.assert_allclose(rec_layer.class_means("true")[0], mu_true, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(rec_layer.class_means("pred")[0], mu_pred, rtol=1e-4, atol=1e-5)
    max_true = np.array([[maxes[labels == c, k].mean() for k in range(K)] for c in range(3)])
    np.testing.assert_allclose(rec_layer.max_true[0], max_true, rtol=1e-4, atol=1e-5)
    signed = bool((means < 0).any())  # any probe response below 0
    assert rec_layer.signed == signed and signed == (layer != "block.relu")
    np.testing.assert_allclose(rec_layer.response_min[0], means.min(0), rtol=1e-5, atol=1e-6)
    si = [brute_force_si(mu_true[:, k], means[:, k], signed) for k in range(K)]
    np.testing.assert_allclose(rec_layer.selectivity("si")[0], si, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(rec_layer.dominant()[0], mu_true.argmax(0))
    top = [sorted(range(len(probe)), key=lambda i: -maxes[i, k])[:8] for k in range(K)]
    assert [set(row) for row in rec_layer.topk_index[0].tolist()] == [set(t) for t in top]
    assert run.metrics["probe_accuracy"][0] == pytest.approx((preds == labels).mean())


def train(model, n_steps, recorder=None, every=10, seed=0):
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for step, (x, y) in enumerate(batches(n_steps)):
        model.train()
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if recorder is not None:
            recorder.step(step, labels=y, logits=logits, epoch=step / 10)
    return model


@pytest.mark.parametrize("batchnorm, dropout, make_probe", [
    (True, 0.5, tiny_probe), (False, 0.0, tiny_probe), (True, 0.5, seg_probe)])
def test_recording_never_changes_training(tmp_path, batchnorm, dropout, make_probe):
    torch.manual_seed(123)
    plain = train(TinyNet(batchnorm=batchnorm, dropout=dropout), 50)
    torch.manual_seed(123)
    model = TinyNet(batchnorm=batchnorm, dropout=dropout)
    with Recorder(model, ["conv1", "block.conv", "fc"], probe=make_probe(), store=tmp_path / "r",
                  every=10, progress=False) as rec:
        train(model, 50, rec)
    for (name, a), (_, b) in zip(plain.state_dict().items(), model.state_dict().items()):
        assert torch.equal(a, b), name
    run = RunStore.open(tmp_path / "r")
    assert run.steps.tolist() == [0, 10, 20, 30, 40, 49]
    assert run.layer("conv1").has("iou") == (make_probe is seg_probe)


def test_online_window_sums_equal_per_batch_brute_force(tmp_path):
    torch.manual_seed(0)
    model = TinyNet(batchnorm=False, dropout=0.0)
    seen = []  # (responses of fc per image, label) as the training loop saw them
    with Recorder(model, ["fc"], probe=tiny_probe(), store=tmp_path / "r", every=4, progress=False) as rec:
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        for step, (x, y) in enumerate(batches(10)):
            logits = model(x)
            seen.append((logits.detach().numpy().copy(), y.numpy()))
            F.cross_entropy(logits, y).backward()
            opt.step()
            opt.zero_grad()
            rec.step(step, labels=y, logits=logits)
    run = RunStore.open(tmp_path / "r")
    assert run.steps.tolist() == [0, 4, 8, 9]
    windows = [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9]]
    fc = run.layer("fc")
    for t, steps in enumerate(windows):
        expected = np.zeros((3, 3))
        count = np.zeros(3, dtype=int)
        correct = 0
        for s in steps:
            responses, labels = seen[s]
            for r, c in zip(responses, labels):
                expected[c] += r
                count[c] += 1
                correct += int(np.argmax(r) == c)
        np.testing.assert_allclose(fc.train_sum[t], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(fc.train_count[t], count)
        assert run.metrics["train_accuracy"][t] == pytest.approx(correct / count.sum())
    cumulative = fc.class_means("train")
    total = fc.train_sum.sum(0) / fc.train_count.sum(0)[:, None]
    np.testing.assert_allclose(cumulative[-1], total, rtol=1e-5)


def test_every_first_step_close_and_explicit_record(tmp_path):
    model = TinyNet()
    rec = Recorder(model, ["fc"], probe=tiny_probe(), store=tmp_path / "r", every=5, progress=False)
    for step in [3, 4, 5, 6, 12]:
        model(torch.randn(2, 3, 8, 8))
        rec.step(step, labels=torch.tensor([0, 1]))
    rec.close()
    rec.close()
    assert not model.fc._forward_hooks
    rec.record(20, metrics={"heldout_accuracy": 0.5})
    run = RunStore.open(tmp_path / "r")
    assert run.steps.tolist() == [3, 5, 12, 20]
    assert np.isnan(run.metrics["heldout_accuracy"][:3]).all() and run.metrics["heldout_accuracy"][3] == 0.5
    # after explicit record() calls alone, close() adds nothing
    rec2 = Recorder(model, ["fc"], probe=tiny_probe(), store=tmp_path / "r", progress=False)
    rec2.record(30)
    rec2.close()
    assert RunStore.open(tmp_path / "r").steps.tolist() == [3, 5, 12, 20, 30]


def test_resume_appends_and_rejects_old_steps(tmp_path):
    model = TinyNet()
    with Recorder(model, ["fc"], probe=tiny_probe(), store=tmp_path / "r", progress=False) as rec:
        rec.record(0)
        rec.record(10)
    rec = Recorder(model, ["fc"], probe=tiny_probe(), store=tmp_path / "r", progress=False)
    with pytest.raises(ValueError, match="step 10, not after the last recorded step 10"):
        rec.record(10)
    rec.record(11)
    rec.close()
    assert RunStore.open(tmp_path / "r").steps.tolist() == [0, 10, 11]


def test_hooks_removed_when_training_raises(tmp_path):
    model = TinyNet()
    with pytest.raises(RuntimeError, match="diverged"):
        with Recorder(model, ["conv1", "fc"], probe=tiny_probe(), store=tmp_path / "r", progress=False) as rec:
            rec.record(0)
            raise RuntimeError("diverged")
    assert not model.conv1._forward_hooks and not model.fc._forward_hooks
    assert RunStore.open(tmp_path / "r").steps.tolist() == [0]


class RandomInForward(TinyNet):
    """Draws from every global RNG in forward, even in eval(): restoring them matters."""

    def forward(self, x):
        random.random()
        np.random.rand()
        return super().forward(x) + 0 * torch.rand(1)


def test_probe_pass_restores_modes_and_rng(tmp_path):
    model = RandomInForward()
    model.train()
    model.bn.eval()  # a frozen BatchNorm stays frozen
    rec = Recorder(model, ["fc"], probe=tiny_probe(), store=tmp_path / "r", progress=False)

    def seed_and_draw(between=lambda: None):
        torch.manual_seed(5), np.random.seed(5), random.seed(5)
        between()
        return torch.rand(3).tolist(), np.random.rand(), random.random()

    running_mean = model.bn.running_mean.clone()
    assert seed_and_draw(lambda: rec.record(0)) == seed_and_draw()
    assert model.training and model.conv1.training and model.drop.training and not model.bn.training
    assert torch.equal(model.bn.running_mean, running_mean)


class TupleOut(nn.Module):
    def forward(self, x):
        return x, x


class WithTuple(nn.Module):
    def __init__(self):
        super().__init__()
        self.pair = TupleOut()
        self.fc = nn.Linear(3 * 8 * 8, 3)

    def forward(self, x):
        a, _ = self.pair(x)
        return self.fc(a.flatten(1))


def test_every_bad_argument_is_reported_at_once(tmp_path):
    with pytest.raises(ValueError, match="4 invalid Recorder arguments") as info:
        Recorder(TinyNet(), ["fc"], probe=tiny_probe(), store=tmp_path / "a", every=-1, topk=0,
                 batch_size=1.5, device="nowhere")
    message = str(info.value)
    for name in ("every", "topk", "batch_size", "device"):
        assert f"{name} given an invalid value" in message
    assert not (tmp_path / "a").exists()


def test_arguments_after_layers_are_keyword_only(tmp_path):
    with pytest.raises(TypeError):
        Recorder(TinyNet(), ["fc"], tiny_probe(), tmp_path / "a")


def test_bad_inputs_name_the_bad_value(tmp_path):
    with pytest.raises(UnknownLayerError, match="unknown layer 'fc2'.*did you mean 'fc'"):
        Recorder(TinyNet(), ["fc2"], probe=tiny_probe(), store=tmp_path / "a")
    assert not (tmp_path / "a").exists()
    with pytest.raises(ValueError, match="layer 'pair' returned tuple"):
        Recorder(WithTuple(), ["pair"], probe=tiny_probe(), store=tmp_path / "b")
    rec = Recorder(TinyNet(), ["fc"], probe=tiny_probe(), store=tmp_path / "c", progress=False)
    rec.model(torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"labels\[1\] = 7 is outside the class range \[0, 3\)"):
        rec.step(0, labels=torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="every given an invalid value: 0; expected an integer >= 1"):
        Recorder(TinyNet(), ["fc"], probe=tiny_probe(), store=tmp_path / "d", every=0)
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a tuneline run"):
        Recorder(TinyNet(), ["fc"], probe=tiny_probe(), store=tmp_path / "e")
    assert os.listdir(tmp_path / "e") == ["notes.txt"]


def test_resume_with_mismatched_classes_is_refused(tmp_path):
    with Recorder(TinyNet(), ["fc"], probe=tiny_probe(), store=tmp_path / "r", progress=False) as rec:
        rec.record(0)
    before = json.loads((tmp_path / "r" / "record.zarr" / "zarr.json").read_text())
    other = tiny_probe(classes=["circle", "square", "star"])
    with pytest.raises(ValueError, match="classes differ"):
        Recorder(TinyNet(), ["fc"], probe=other, store=tmp_path / "r")
    assert json.loads((tmp_path / "r" / "record.zarr" / "zarr.json").read_text()) == before


def test_online_only_recorder_without_probe(tmp_path):
    model = TinyNet()
    with Recorder(model, ["block.conv"], classes=CLASSES, store=tmp_path / "r", every=2) as rec:
        for step, (x, y) in enumerate(batches(5)):
            model(x)
            rec.step(step, labels=y)
    run = RunStore.open(tmp_path / "r")
    assert run.steps.tolist() == [0, 2, 4]
    assert run.layer("block.conv").train_count.sum() == 5 * 8
    assert not run.layer("block.conv").has("sum_true")


def test_probe_smaller_than_topk(tmp_path):
    with Recorder(TinyNet(), ["conv1", "fc"], probe=tiny_probe(n=3), store=tmp_path / "r", topk=8,
                  progress=False) as rec:
        rec.record(0)
    run = RunStore.open(tmp_path / "r")
    assert run.topk == 3
    assert run.layer("fc").topk_index.shape == (1, 3, 3)
    assert sorted(run.layer("conv1").topk_index[0, 0].tolist()) == [0, 1, 2]


def test_log_metrics_stores_every_value_at_its_step(tmp_path):
    model = TinyNet()
    with Recorder(model, ["fc"], probe=tiny_probe(), store=tmp_path / "r", every=10, progress=False) as rec:
        with pytest.raises(ValueError, match=r"log_metrics\(\) before any step\(\) or record\(\): pass step="):
            rec.log_metrics({"val": 0.1})
        for step, (x, y) in enumerate(batches(12)):
            model(x)
            rec.step(step, labels=y)
            if step in (3, 4):
                rec.log_metrics({"val": step / 10})  # two values between rows: both kept
        rec.log_metrics({"val": 0.9, "other": 2.0}, step=7)  # an explicit, earlier step
        rec.step(12, metrics={"lr": 0.01})
        with pytest.raises(ValueError, match="metric 'val' = 'high' is not a number"):
            rec.log_metrics({"val": "high"})
    run = RunStore.open(tmp_path / "r")
    steps, values = run.scalar("val")
    assert steps.tolist() == [3, 4, 7] and values.tolist() == [0.3, 0.4, 0.9]
    assert run.scalar("other")[0].tolist() == [7] and run.scalar("lr")[0].tolist() == [12]
    assert run.scalar("probe_accuracy")[0].tolist() == run.steps.tolist() == [0, 10, 12]
    assert set(run.scalar_names) == {"val", "other", "lr", "probe_accuracy"}  # no logits: no train accuracy
