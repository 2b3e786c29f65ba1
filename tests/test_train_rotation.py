"""training.rotation and training.rotate: a rotated layer records differently, the network computes the same."""

import json

import numpy as np
import pytest
import torch

from recorder import RunStore
from recorder.hooks import LayerHooks
from training.config import TrainConfig
from training.models import SmallCNN, resnet18_small
from training.rotate import record_rotation
from training.rotation import RotatedUnits, next_module, random_rotation
from training.sweep import PRESETS
from training.train import train


def test_random_rotation_is_orthogonal_and_seeded():
    q = random_rotation(7, seed=3)
    torch.testing.assert_close(q @ q.T, torch.eye(7), atol=1e-5, rtol=0)
    assert torch.equal(q, random_rotation(7, seed=3)) and not torch.equal(q, random_rotation(7, seed=4))


@pytest.mark.parametrize("layer", ["conv1", "conv2", "conv3"])
def test_rotation_keeps_outputs_and_rotates_recorded_units(layer):
    torch.manual_seed(0)
    model = SmallCNN(depth=3, width=4, batchnorm=True).eval()
    x = torch.randn(5, 3, 16, 16)
    seen = {}
    with torch.no_grad():
        with LayerHooks(model, [layer], lambda n, out: seen.__setitem__("plain", out)):
            plain = model(x)
        with RotatedUnits(model, layer, seed=1, example=x) as rotation:
            with LayerHooks(model, [layer], lambda n, out: seen.__setitem__("rotated", out)):
                rotated = model(x)
    torch.testing.assert_close(rotated, plain, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(seen["rotated"], seen["plain"], atol=1e-3)
    expected = torch.einsum("jk,bkhw->bjhw", rotation.q, seen["plain"])
    torch.testing.assert_close(seen["rotated"], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(x), plain)  # hooks gone: the model is as it was


def test_resnet_layer4_rotation_is_inverted_by_avgpool():
    torch.manual_seed(0)
    model = resnet18_small().eval()
    assert next_module(model, "layer4") == "avgpool"
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        plain = model(x)
        with RotatedUnits(model, "layer4", seed=0, example=x):
            torch.testing.assert_close(model(x), plain, atol=1e-4, rtol=1e-4)


def test_a_wrong_consumer_is_detected():
    model = SmallCNN(depth=2, width=4).eval()
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(ValueError, match="changed the model's output"):
        RotatedUnits(model, "conv1", consumer="conv2", example=x)  # a max-pool sits in between
    with pytest.raises(ValueError, match="last module"):
        next_module(model, "fc")


def test_rotation_control_run_has_the_same_accuracy_and_other_responses(tmp_path):
    config = TrainConfig.from_dict({**PRESETS["smoke"].base, "progress": False})
    train(config, tmp_path / "baseline")
    result = record_rotation(tmp_path / "baseline", tmp_path / "rotated", progress=False)
    assert result["layer"] == "conv2" and result["steps"] == [0, 3, 6]
    base, rot = RunStore.open(tmp_path / "baseline"), RunStore.open(tmp_path / "rotated")
    assert rot.steps.tolist() == base.steps.tolist()
    np.testing.assert_allclose(rot.metrics["heldout_accuracy"], base.metrics["heldout_accuracy"])
    np.testing.assert_allclose(rot.metrics["probe_accuracy"], base.metrics["probe_accuracy"])
    for name in ("conv1", "fc"):
        np.testing.assert_allclose(rot.layer(name).sum_true, base.layer(name).sum_true, rtol=1e-4, atol=1e-4)
    assert not np.allclose(rot.layer("conv2").sum_true, base.layer("conv2").sum_true, atol=1e-3)
    assert json.loads((tmp_path / "rotated" / "config.json").read_text())["rotation"]["layer"] == "conv2"
    assert rot.config["rotation"]["consumer"] == "gap"
    record_rotation(tmp_path / "baseline", tmp_path / "rotated", final_only=True, overwrite=True, progress=False)
    assert RunStore.open(tmp_path / "rotated").steps.tolist() == [6]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty.*no rotation run"):
        record_rotation(tmp_path / "baseline", tmp_path / "other", overwrite=True)
    assert (tmp_path / "other" / "notes.txt").exists()
