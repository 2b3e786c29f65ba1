"""Resume rules through the Recorder: the same setup appends, any other is refused untouched.

A refusal names the difference, and the run's files hash the same before and after.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import CLASSES, CONCEPTS, TinyNet, batches, seg_probe
from test_reliability_crash import committed_rows, one_thread  # noqa: F401 (autouse fixture)
from test_store import hash_files

from recorder import ProbeSet, Recorder, RunStore
from recorder.store import RunMismatchError

LAYERS = ["conv1", "fc"]


def record_rows(store, model=None, probe="seg", layers=LAYERS, steps=range(11), **kwargs) -> Recorder:
    """A forward per step and a row at the first step and every 10 (probe=None: online only)."""
    model = model or TinyNet()
    with Recorder(model, layers, probe=seg_probe() if probe == "seg" else probe, store=store, every=10,
                  progress=False, **kwargs) as rec:
        for step, (x, y) in zip(steps, batches(len(steps), seed=steps[0])):
            model(x)
            rec.step(step, labels=y)
    return rec


def seg_probe_with(concepts=CONCEPTS, classes=CLASSES, n=14, seed=0) -> ProbeSet:
    base = seg_probe(n=n, seed=seed)
    seg = np.stack([base[i]["seg"].numpy() for i in range(len(base))])
    return ProbeSet(base.thumbnails(), base.labels.numpy(), classes, seg=seg, concepts=concepts,
                    mean=(0.5,) * 3, std=(0.25,) * 3, source="seg-probe")


def test_the_same_setup_appends_and_keeps_every_file_of_earlier_rows(tmp_path):
    record_rows(tmp_path / "run")
    n, before = committed_rows(tmp_path / "run")
    chunks = {path: digest for path, digest in hash_files(tmp_path / "run").items() if "/c." in path}
    assert n == 2 and chunks
    rec = record_rows(tmp_path / "run", steps=range(11, 21))
    assert rec.last_recorded_step == 20
    n, after = committed_rows(tmp_path / "run")
    assert n == 3 and after["step"].tolist() == [0, 10, 20]
    for key, rows in before.items():
        np.testing.assert_array_equal(after[key][:2], rows, err_msg=key)
    now = hash_files(tmp_path / "run")
    assert {path: now.get(path) for path in chunks} == chunks  # no chunk of rows 0 and 1 was rewritten


CHANGES = [
    ("classes", dict(probe=seg_probe_with(classes=["circle", "square", "star"])),
     r"classes differ: stored \['circle', 'square', 'stripe'\], given \['circle', 'square', 'star'\]"),
    ("layers", dict(layers=["conv1"]), r"layers differ: stored \['conv1', 'fc'\], given \['conv1'\]"),
    ("layer order", dict(layers=["fc", "conv1"]), r"layers differ: stored \['conv1', 'fc'\], given \['fc', 'conv1'\]"),
    ("units", dict(model=TinyNet(width=8)), r"units differ: layer 'conv1' stored 6, given 8"),
    ("concept list", dict(probe=seg_probe_with(concepts=[*CONCEPTS[:4], ("dusk", "scene")])),
     r"concepts differ: stored \[.*'night'.*\], given \[.*'dusk'.*\]"),
    ("concept category", dict(probe=seg_probe_with(concepts=[*CONCEPTS[:4], ("night", "time")])),
     r"concepts differ: .*given \[.*\{'name': 'night', 'category': 'time'\}\]"),
    ("probe fingerprint", dict(probe=seg_probe(seed=1)),
     r"probe fingerprint differs: stored '[0-9a-f]{16}', given '[0-9a-f]{16}'"),
    ("probe size", dict(probe=seg_probe(n=15)),
     r"probe fingerprint differs: .*; probe n_images differs: stored 14, given 15"),
    ("topk", dict(topk=4), r"topk differs: stored 8, given 4"),
]


@pytest.mark.parametrize("change, match", [c[1:] for c in CHANGES], ids=[c[0] for c in CHANGES])
def test_another_setup_is_refused_naming_the_difference_and_changes_no_file(tmp_path, change, match):
    record_rows(tmp_path / "run")
    before = hash_files(tmp_path / "run")
    change = dict(change)
    model = change.pop("model", None) or TinyNet()
    with pytest.raises(RunMismatchError, match=r"cannot resume run at '.*run': " + match):
        record_rows(tmp_path / "run", model=model, steps=range(11, 21), **change)
    assert hash_files(tmp_path / "run") == before
    assert model.conv1._forward_hooks == {} and model.fc._forward_hooks == {}
    record_rows(tmp_path / "run", steps=range(11, 21))  # the run still takes its own setup
    assert RunStore.open(tmp_path / "run").steps.tolist() == [0, 10, 20]


def test_online_only_run_refuses_other_classes_at_the_first_step(tmp_path):
    """Without a probe the store opens at the first step(): the refusal comes there."""
    model = TinyNet()
    record_rows(tmp_path / "run", model=model, probe=None, classes=CLASSES)
    before = hash_files(tmp_path / "run")
    rec = Recorder(model, LAYERS, classes=["a", "b", "c"], store=tmp_path / "run", progress=False)
    model(torch.randn(2, 3, 8, 8))
    with pytest.raises(RunMismatchError, match=r"classes differ: stored \['circle', 'square', 'stripe'\], "
                                               r"given \['a', 'b', 'c'\]"):
        rec.step(11, labels=torch.tensor([0, 1]))
    rec.close()
    assert hash_files(tmp_path / "run") == before
    assert not model.conv1._forward_hooks


def test_layers_are_stored_in_the_order_given(tmp_path):
    record_rows(tmp_path / "run", layers=["fc", "conv1"], steps=range(1))
    assert RunStore.open(tmp_path / "run").layers == ["fc", "conv1"]  # not the forward order
