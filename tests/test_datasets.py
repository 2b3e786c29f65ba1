"""training.datasets: world splits, batch order and sharding, augmentation, CIFAR-10 and ImageFolder fixtures."""

import os
import pickle

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from recorder import RunStore
from training.config import TrainConfig
from training.datasets import augment, balanced_indices, batch_indices, load_data
from training.sweep import PRESETS
from training.train import train
from training.world import ShapesWorld, WorldConfig

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def tiny(**changes) -> TrainConfig:
    return TrainConfig.from_dict({**PRESETS["smoke"].base, "progress": False, **changes})


def test_world_splits_match_shapes_world_items():
    config = tiny()
    data = load_data(config)
    assert len(data.train) == 64 and len(data.heldout) == 20 and len(data.probe) == 20
    assert data.probe.has_seg and data.classes[0] == "house"
    x, y = data.train.batch([5, 9])
    ds = ShapesWorld(64, seed=0, config=WorldConfig(size=16))
    torch.testing.assert_close(x[0], ds[5][0], atol=1e-6, rtol=0)
    assert y.tolist() == [5, 9]
    held, _ = data.heldout.batch([0])
    assert not torch.equal(held[0], x[0])  # held-out images come from another world seed


def test_batch_order_is_deterministic_per_epoch_and_shards_union_to_the_batch():
    batches = [batch_indices(step, 16, 70, seed=3) for step in range(1, 5)]  # 4 batches per epoch
    assert torch.equal(batches[0], batch_indices(1, 16, 70, seed=3))
    epoch = torch.cat(batches)
    assert len(set(epoch.tolist())) == 64
    assert not torch.equal(batch_indices(5, 16, 70, seed=3), batches[0])  # next epoch, new order
    assert not torch.equal(batch_indices(1, 16, 70, seed=4), batches[0])


def test_augmentation_of_shards_equals_augmentation_of_the_batch():
    x = torch.randn(8, 3, 16, 16)
    torch.manual_seed(5)
    whole = augment(x, torch.arange(8), 8)
    halves = []
    for rows in (torch.arange(0, 4), torch.arange(4, 8)):
        torch.manual_seed(5)
        halves.append(augment(x[rows], rows, 8))
    torch.testing.assert_close(torch.cat(halves), whole)
    assert whole.shape == x.shape and not torch.allclose(whole, x)


def test_balanced_indices_take_classes_round_robin():
    assert balanced_indices([0, 0, 0, 1, 1, 2], 5).tolist() == [0, 3, 5, 1, 4]


# ------------------------------------------------------------------ CIFAR-10
def write_fake_cifar(root, n_per_batch=8, seed=0):
    """A `cifar-10-batches-py` folder in the python-pickle format, with tiny random batches."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                 "labels": [int(v) for v in rng.integers(0, 10, n_per_batch)], "batch_label": name}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": CIFAR_CLASSES}))
    return root


@pytest.fixture
def skip_cifar_md5(monkeypatch):
    """torchvision checks each CIFAR file's md5 even with download=False; a fixture cannot match the
    real sums, so the check is reduced to "the file exists" (the loading code is torchvision's own)."""
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity",
                        lambda fpath, md5=None: os.path.isfile(fpath))


def test_cifar_fixture_is_refused_by_the_md5_check(tmp_path):
    write_fake_cifar(tmp_path)
    with pytest.raises(FileNotFoundError, match="CIFAR-10 not found under data_root"):
        load_data(tiny(data="cifar10", data_root=str(tmp_path)))


def test_cifar10_loads_and_trains_without_dissection(tmp_path, skip_cifar_md5):
    write_fake_cifar(tmp_path / "data")
    config = tiny(data="cifar10", data_root=str(tmp_path / "data"), heldout_size=6, probe_size=5, steps=2,
                  record_every=2)
    data = load_data(config)
    assert data.classes == CIFAR_CLASSES and len(data.train) == 40 and len(data.heldout) == 6
    x, y = data.train.batch([0, 1])
    assert x.shape == (2, 3, 32, 32) and y.dtype == torch.int64
    assert len(data.probe) == 5 and not data.probe.has_seg and data.probe.classes == CIFAR_CLASSES
    train(config, tmp_path / "run")
    run = RunStore.open(tmp_path / "run")
    assert run.steps.tolist() == [0, 2] and run.concepts == []
    assert run.layer("conv2").has("threshold") and not run.layer("conv2").has("iou")


def test_missing_cifar_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        load_data(tiny(data="cifar10", data_root=str(tmp_path)))


# ------------------------------------------------------------------ ImageFolder
def write_image_folder(root, classes=("cat", "dog", "emu"), n=6, seed=0):
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            size = (20 + i, 24)  # sizes differ: images are resized
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_image_folder_single_tree_is_split_and_trains(tmp_path):
    write_image_folder(tmp_path / "pets")
    config = tiny(data="imagefolder", data_root=str(tmp_path / "pets"), batch_size=4, steps=2, record_every=1,
                  probe_size=3)
    data = load_data(config)
    assert data.classes == ["cat", "dog", "emu"]
    assert len(data.train) + len(data.heldout) == 18 and len(data.heldout) == 3
    assert len(data.probe) == 3 and data.probe.classes == data.classes
    x, _ = data.train.batch([0, 1])
    assert x.shape == (2, 3, 16, 16)
    train(config, tmp_path / "run")
    assert RunStore.open(tmp_path / "run").steps.tolist() == [0, 1, 2]


def test_image_folder_train_val_layout(tmp_path):
    write_image_folder(tmp_path / "d" / "train", n=4)
    write_image_folder(tmp_path / "d" / "val", n=2, seed=1)
    data = load_data(tiny(data="imagefolder", data_root=str(tmp_path / "d"), batch_size=4, probe_size=6))
    assert len(data.train) == 12 and len(data.heldout) == 6
    assert data.probe.labels.tolist() == [0, 1, 2, 0, 1, 2]
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_data(tiny(data="imagefolder", data_root=str(tmp_path / "nope")))
