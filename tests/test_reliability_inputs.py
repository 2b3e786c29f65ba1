"""Bad inputs: each gives an exception a user can act on, and no recorded row is lost.

Every case runs next to a run that already has two rows (steps 0 and 10). After the
error the run is opened again and every committed array compared with its state before;
where the case left a usable Recorder, it then records one more row.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import h5py
import numpy as np
import pytest
import torch
from helpers import CLASSES, CONCEPTS, TinyNet, batches, seg_probe, sgd_steps, tiny_probe
from test_probe_broden import make_broden
from test_reliability_crash import committed_rows, one_thread  # noqa: F401 (autouse fixture)
from torch import nn

from recorder import ProbeSet, Recorder, RunStore
from recorder.hooks import UnknownLayerError
from recorder.store import NotARunError

LAYERS = ["conv1", "fc"]


class Extra(TinyNet):
    """TinyNet with one more module `extra` that forward calls on the input (unless `unused`)."""

    def __init__(self, extra: nn.Module, unused: bool = False):
        super().__init__()
        self.extra, self.unused = extra, unused

    def forward(self, x):
        if not self.unused:
            self.extra(x)
        return super().forward(x)


class Fn(nn.Module):
    def __init__(self, fn: Callable):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class MapOutput(TinyNet):
    """Returns a map (B, C, H, W) instead of logits: no predicted class can be read from it."""

    def forward(self, x):
        super().forward(x)
        return x


@dataclass
class Context:
    tmp_path: object
    run: object  # the folder of the run with two rows
    rec: Recorder | None = None

    def resume(self, model: nn.Module | None = None, **kwargs) -> Recorder:
        """A Recorder on the run, with the run's setup."""
        self.rec = Recorder(model or TinyNet(), LAYERS, probe=tiny_probe(), store=self.run,
                            every=10, progress=False, **kwargs)
        return self.rec

    def train_batch(self, n: int = 2) -> None:
        self.rec.model(torch.randn(n, 3, 8, 8))


def corrupt_copy(ctx: Context, relative: str) -> object:
    """A copy of the run whose file `relative` (in record.zarr) is cut short."""
    copy = ctx.tmp_path / "copy"
    shutil.copytree(ctx.run, copy)
    meta = copy / "record.zarr" / relative
    meta.write_bytes(meta.read_bytes()[:25])
    return copy


def h5_with_short_labels(ctx: Context) -> None:
    path = ctx.tmp_path / "probe.h5"
    tiny_probe().to_h5(path)
    with h5py.File(path, "a") as f:
        del f["labels"]
        f.create_dataset("labels", data=np.zeros(23, np.int32))
    ProbeSet.from_h5(path)


def broden_without_an_image(ctx: Context) -> None:
    root = ctx.tmp_path / "broden"
    make_broden(root)
    (root / "images" / "img2.png").unlink()
    ProbeSet.from_broden(root)


def never_called_online(ctx: Context) -> None:
    model = Extra(nn.Linear(3, 3), unused=True)
    rec = Recorder(model, ["extra"], classes=CLASSES, store=ctx.tmp_path / "online", progress=False)
    model(torch.randn(2, 3, 8, 8))
    rec.step(0, labels=torch.tensor([0, 1]))


def step_without_forward(ctx: Context) -> None:
    ctx.resume()
    ctx.train_batch(2)
    ctx.rec.step(11, labels=torch.tensor([0, 1]))
    ctx.rec.step(12, labels=torch.tensor([0, 1]))


def probe_the_model_cannot_take(ctx: Context) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 3))
    Recorder(model, ["1"], probe=tiny_probe(), store=ctx.tmp_path / "sizes")


def batch_second_attention(ctx: Context) -> None:
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 1)  # batch_first=False: (T, B, E)

        def forward(self, x):  # (B, 3, 8, 8) -> rows as tokens, (T, B, E)
            seq = x.mean(1).permute(1, 0, 2)
            return self.attn(seq, seq, seq)[0].mean(0)

    Recorder(Tokens(), ["attn[0]"], probe=tiny_probe(), store=ctx.tmp_path / "tokens")


def two_devices(ctx: Context) -> None:
    model = TinyNet()
    model.fc.to("meta")
    Recorder(model, LAYERS, probe=tiny_probe(), store=ctx.run)


def labels(ctx: Context, values) -> None:
    ctx.resume()
    ctx.train_batch(2)
    ctx.rec.step(11, labels=torch.tensor(values))


def step_twice(ctx: Context) -> None:
    ctx.resume()
    ctx.train_batch()
    ctx.rec.step(11, labels=torch.tensor([0, 1]))
    ctx.rec.step(11)


def store_under_a_file(ctx: Context) -> None:
    (ctx.tmp_path / "file.txt").write_text("not a folder")
    Recorder(TinyNet(), LAYERS, probe=tiny_probe(), store=ctx.tmp_path / "file.txt" / "run")


def folder_that_is_not_a_run(ctx: Context) -> None:
    (ctx.tmp_path / "notes").mkdir()
    (ctx.tmp_path / "notes" / "todo.txt").write_text("mine")
    Recorder(TinyNet(), LAYERS, probe=tiny_probe(), store=ctx.tmp_path / "notes")


# (id, action, exception, match, whether a resumed Recorder is still usable after the error)
CASES = [
    ("unknown layer", lambda c: Recorder(TinyNet(), ["conv1", "fc2"], probe=tiny_probe(), store=c.run),
     UnknownLayerError, r"unknown layer 'fc2' \(did you mean 'fc'.*\)\. Valid layer names: 'conv1', 'bn'", False),
    ("unsupported output shape",
     lambda c: Recorder(Extra(Fn(lambda x: x[:, :, None])), ["extra"], probe=tiny_probe(), store=c.run),
     ValueError, r"layer 'extra' has output shape \(2, 3, 1, 8, 8\); supported shapes are \[B, K, H, W\]", False),
    ("output not a tensor", lambda c: Recorder(Extra(Fn(lambda x: (x, x))), ["extra"], probe=tiny_probe(),
                                               store=c.run),
     ValueError, r"layer 'extra' returned tuple\(Tensor \[2, 3, 8, 8\], Tensor \[2, 3, 8, 8\]\); name the element to record with an index, e.g. 'extra\[0\]'", False),
    ("integer output", lambda c: Recorder(Extra(Fn(lambda x: x.long())), ["extra"], probe=tiny_probe(),
                                          store=c.run),
     ValueError, r"layer 'extra' returned a torch.int64 tensor; unit responses need floats", False),
    ("layer never called", lambda c: Recorder(Extra(nn.Linear(3, 3), unused=True), ["extra"],
                                              probe=tiny_probe(), store=c.run),
     ValueError, r"layer\(s\) \['extra'\] were not called during the forward pass", False),
    ("layer never called, online only", never_called_online,
     ValueError, r"layer 'extra' was not called in a training forward pass since the last step\(\)", False),
    ("empty probe", lambda c: ProbeSet(np.zeros((0, 8, 8, 3), np.uint8), [], CLASSES),
     ValueError, r"probe is empty: images has no items \(N == 0\)", False),
    ("empty data set as probe", lambda c: ProbeSet.from_dataset([], CLASSES),
     ValueError, r"probe is empty: the dataset yielded no items", False),
    ("probe label out of range", lambda c: ProbeSet(np.zeros((2, 8, 8, 3), np.uint8), [0, 3], CLASSES),
     ValueError, r"label 3 at index 1 is out of range; valid: \[0, 3\) for classes", False),
    ("training label out of range", lambda c: labels(c, [0, 7]),
     ValueError, r"labels\[1\] = 7 is outside the class range \[0, 3\)", True),
    ("negative training label", lambda c: labels(c, [-1, 0]),
     ValueError, r"labels\[0\] = -1 is outside the class range \[0, 3\)", True),
    ("labels for another batch", lambda c: labels(c, [0, 1, 2]),
     ValueError, r"layer 'conv1' saw 2 training images since the last step\(\) but labels has 3", True),
    ("float training labels", lambda c: labels(c, [0.0, 1.0]),
     TypeError, r"step\(\) got labels of dtype torch.float32; labels are integer class ids in \[0, 3\)", True),
    ("step without a forward", step_without_forward,
     ValueError, r"the model ran no training forward since the previous step\(\); call step\(\) once per batch, "
     r"after model\(x\)", True),
    ("probe images the model cannot take", probe_the_model_cannot_take,
     ValueError, r"the model failed on the probe's images, shape \[2, 3, 8, 8\] \(N, C, H, W\), in module '1': "
     r"RuntimeError: mat1 and mat2 shapes cannot be multiplied.*probe's image size \(8, 8\) and channel count 3",
     False),
    ("batch-second tokens", batch_second_attention,
     ValueError, r"layer 'attn\[0\]' has output shape \(8, 2, 8\) for a batch of 2 images: outputs must have "
     r"the batch first.*batch_first=True", False),
    ("step repeated", step_twice, ValueError, r"step\(\) got step 11, not after the previous step 11", True),
    ("step of a recorded row", lambda c: c.resume().step(10),
     ValueError, r"step\(\) got step 10, not after the last recorded step 10 of the run at '.*run'", True),
    ("record() at an older step", lambda c: c.resume().record(5),
     ValueError, r"record\(\) got step 5, not after the last recorded step 10", True),
    ("step not an integer", lambda c: c.resume().step(11.5),
     TypeError, r"step\(\) got step=11.5; steps are integers", True),
    ("every=0", lambda c: Recorder(TinyNet(), LAYERS, probe=tiny_probe(), store=c.run, every=0),
     ValueError, r"every given an invalid value: 0; expected an integer >= 1", False),
    ("quantile=1.5", lambda c: Recorder(TinyNet(), LAYERS, probe=tiny_probe(), store=c.run, quantile=1.5),
     ValueError, r"quantile given an invalid value: 1\.5; expected a number in \(0, 1\)", False),
    ("no store", lambda c: Recorder(TinyNet(), LAYERS, probe=tiny_probe()),
     ValueError, r"store is required: the run folder or URL to write", False),
    ("classes that differ from the probe's",
     lambda c: Recorder(TinyNet(), LAYERS, probe=tiny_probe(), store=c.run, classes=["a", "b", "c"]),
     ValueError, r"classes \['a', 'b', 'c'\] differ from the probe's classes", False),
    ("unwritable store folder", store_under_a_file,
     NotADirectoryError, r"cannot create a run store at '.*file\.txt/run': Not a directory", False),
    ("folder that is not a run", folder_that_is_not_a_run,
     NotARunError, r"'.*notes' is not a tuneline run: it is not empty and has no record.zarr", False),
    ("corrupted root zarr.json", lambda c: Recorder(TinyNet(), LAYERS, probe=tiny_probe(),
                                                    store=corrupt_copy(c, "zarr.json")),
     NotARunError, r"copy/record.zarr' is not a tuneline run: cannot read zarr.json", False),
    ("corrupted array zarr.json",
     lambda c: Recorder(TinyNet(), LAYERS, probe=tiny_probe(), store=corrupt_copy(c, "layers/fc/sum_true/zarr.json")),
     NotARunError, r"copy/record.zarr' is damaged: cannot parse layers/fc/sum_true/zarr.json", False),
    ("corrupted chunk, read", lambda c: RunStore.open(corrupt_copy(c, "layers/fc/topk_value/c.1.0.0")).layer(
        "fc").topk_value, NotARunError, r"is damaged: cannot read rows 0..1 of array 'layers/fc/topk_value'", False),
    ("Broden folder with a missing image", broden_without_an_image,
     FileNotFoundError, r"Broden image not found: .*broden/images/img2.png", False),
    ("HDF5 probe with datasets of different lengths", h5_with_short_labels,
     ValueError, r"probe.h5' has datasets of different lengths: images 24, labels 23", False),
    ("parameters on several devices", two_devices,
     ValueError, r"parameters and buffers are on several devices \(cpu, meta\); pass device= to the Recorder",
     False),
    ("model output without classes", lambda c: c.resume(MapOutput()).record(20),
     ValueError, r"cannot take predicted classes from the model output \(24, 3, 8, 8\)", False),
]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A run with rows at steps 0 and 10, and its committed arrays (made once, copied per test)."""
    path = tmp_path_factory.mktemp("recorded") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = TinyNet()
    with Recorder(model, LAYERS, probe=tiny_probe(), store=path, every=10, progress=False) as rec:
        for step, (x, y) in enumerate(batches(11)):
            model(x)
            rec.step(step, labels=y)
    torch.set_num_threads(threads)
    n, rows = committed_rows(path)
    assert n == 2
    return path, rows


@pytest.fixture
def two_rows(tmp_path, recorded):
    """A copy at tmp_path/'run' of the recorded run, and its committed arrays."""
    shutil.copytree(recorded[0], tmp_path / "run")
    return tmp_path / "run", recorded[1]


@pytest.mark.parametrize("action, error, match, usable", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_and_no_row_is_lost(tmp_path, two_rows, action, error, match, usable):
    run, before = two_rows
    ctx = Context(tmp_path, run)
    with pytest.raises(error, match=match):
        action(ctx)
    n, after = committed_rows(run)
    assert n == 2 and after.keys() == before.keys()
    for key, rows in before.items():
        np.testing.assert_array_equal(after[key], rows, err_msg=key)
    if usable:  # the Recorder that refused the input still records
        ctx.rec.record(20)
        assert RunStore.open(run).steps.tolist() == [0, 10, 20]
    if ctx.rec is not None:
        ctx.rec.close()


def test_at_least_fifteen_cases():
    assert len(CASES) >= 15 and len({c[0] for c in CASES}) == len(CASES)


# ---------------------------------------------------------------- probes without classes


def test_probe_without_classes_records_dissection_only(tmp_path):
    """A Broden-like probe (segmentations, no classes): per-class arrays skipped, dissection runs."""
    with_seg = seg_probe()
    pixels = np.stack([with_seg.thumbnails()[i] for i in range(len(with_seg))])
    seg = np.stack([with_seg[i]["seg"].numpy() for i in range(len(with_seg))])
    probe = ProbeSet(pixels, None, None, seg=seg, concepts=CONCEPTS, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert probe.classes == [] and (probe.labels == -1).all()
    model = TinyNet()
    with Recorder(model, ["conv1", "block.conv", "fc"], probe=probe, store=tmp_path / "r", every=2,
                  progress=False) as rec:
        for step, (x, y) in enumerate(batches(5)):
            model(x)
            rec.step(step, labels=y)  # labels are ignored: there are no classes
    run = RunStore.open(tmp_path / "r")
    assert run.steps.tolist() == [0, 2, 4] and run.classes == []
    conv = run.layer("block.conv")
    assert conv.arrays == ["response_min", "threshold", "iou", "topk_index", "topk_value", "topk_map"]
    assert run.layer("fc").arrays == ["response_min", "topk_index", "topk_value"]
    assert conv.iou.shape == (3, 12, len(CONCEPTS)) and np.isfinite(conv.iou).all()
    assert np.isfinite(conv.threshold).all() and (conv.topk_index >= 0).all()
    assert conv.detectors()["concept"].shape == (3, 12)
    assert list(run.metrics) == []  # no probe or train accuracy without classes


# ---------------------------------------------------------------- NaN and Inf activations


class Poisoned(TinyNet):
    """TinyNet plus `aux`, a conv beside the trained path whose unit 0 is NaN or +-Inf on
    some images. Training never uses `aux`, so its weights must match a plain run's."""

    def __init__(self, value: float, every_image: bool = False):
        super().__init__()
        self.aux = Fn(self.poison)
        self.value, self.every_image = value, every_image

    def poison(self, x):
        out = x.clone()  # (B, 3, H, W)
        rows = slice(None) if self.every_image else slice(0, 1)
        out[rows, 0, 0, 0] = self.value
        return out

    def forward(self, x):
        self.aux(x)
        return super().forward(x)


def train(model, rec=None, n_steps=6):
    torch.manual_seed(3)
    return sgd_steps(model, batches(n_steps), rec, lr=0.1)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
def test_nan_and_inf_activations_are_recorded_as_nan_with_one_warning(tmp_path, value):
    torch.manual_seed(0)
    plain = train(Poisoned(value))
    torch.manual_seed(0)
    model = Poisoned(value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Recorder(model, ["aux", "fc"], probe=seg_probe(), store=tmp_path / "r", every=2,
                      progress=False) as rec:
            train(model, rec)
    for (name, a), b in zip(plain.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name
    ours = [w for w in caught if "NaN or Inf" in str(w.message)]
    assert len(ours) == 1 and ours[0].category is RuntimeWarning, [str(w.message) for w in caught]
    assert "layer 'aux' produced NaN or Inf activations" in str(ours[0].message)
    run = RunStore.open(tmp_path / "r")
    assert run.steps.tolist() == [0, 2, 4, 5]
    aux = run.layer("aux")
    max_is_nan = value != float("-inf")  # a spatial max ignores a -Inf
    for array in ["sum_true", "sum_pred", "train_sum"] + ["max_true"] * max_is_nan:  # [T, C, K]
        rows = getattr(aux, array)
        assert np.isnan(rows[:, :, 0]).any(1).all() and np.isfinite(rows[:, :, 1:]).all(), array
    for array in ["sum_true"] + ["max_true"] * max_is_nan:  # the poisoned probe image 0 is of class 0
        rows = getattr(aux, array)
        assert np.isnan(rows[:, 0, 0]).all() and np.isfinite(rows[:, 1:, 0]).all(), array
    assert np.isnan(aux.threshold[:, 0]).all() and np.isfinite(aux.threshold[:, 1:]).all()
    assert np.isnan(aux.iou[:, 0]).all() and np.isfinite(aux.iou[:, 1:]).all()
    assert np.isfinite(aux.topk_value[:, 1:]).all()
    assert np.isnan(aux.topk_value[:, 0, 0]).all() == max_is_nan  # a NaN max ranks first
    assert np.isnan(aux.class_means("true")[:, 0, 0]).all()
    fc = run.layer("fc")  # the trained path is finite
    for array in ("sum_true", "train_sum", "topk_value"):
        assert np.isfinite(getattr(fc, array)).all(), array


def test_nan_everywhere_still_records(tmp_path):
    """Every activation of a layer NaN: every statistic of it NaN, counts kept, one warning."""
    model = Poisoned(float("nan"), every_image=True)
    model.aux = Fn(lambda x: x * float("nan"))
    with pytest.warns(RuntimeWarning, match="layer 'aux' produced NaN or Inf") as caught:
        with Recorder(model, ["aux"], probe=seg_probe(), store=tmp_path / "r", progress=False) as rec:
            rec.record(0)
            rec.record(1)
    assert len([w for w in caught if "NaN or Inf" in str(w.message)]) == 1
    aux = RunStore.open(tmp_path / "r").layer("aux")
    assert np.isnan(aux.sum_true).all() and np.isnan(aux.threshold).all() and np.isnan(aux.iou).all()
    np.testing.assert_array_equal(aux.count_true.sum(1), [len(seg_probe())] * 2)


# ---------------------------------------------------------------- devices


class SeesDevices(TinyNet):
    def __init__(self):
        super().__init__()
        self.seen: list[torch.device] = []

    def forward(self, x):
        self.seen.append(x.device)
        return super().forward(x)


def test_probe_images_go_to_the_device_given(tmp_path):
    """device= names where probe images go; the default is the model's (here both CPU)."""
    model = SeesDevices()
    with Recorder(model, LAYERS, probe=tiny_probe(), store=tmp_path / "r", progress=False, device="cpu") as rec:
        rec.record(0)
    assert set(model.seen) == {torch.device("cpu")}
    with pytest.raises(ValueError, match="failed on the probe.s images.*RuntimeError: .*meta"):  # used as given
        Recorder(SeesDevices(), LAYERS, probe=tiny_probe(), store=tmp_path / "m", device="meta")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_model_moved_to_cuda_after_the_recorder_was_made(tmp_path):
    """A CPU probe, a model moved to the GPU between rows: batches and accumulators follow it."""
    model = TinyNet()
    with Recorder(model, LAYERS, probe=tiny_probe(), store=tmp_path / "r", every=2, progress=False) as rec:
        for step, (x, y) in enumerate(batches(5)):
            if step == 2:
                model.cuda()
            device = next(model.parameters()).device
            model(x.to(device))
            rec.step(step, labels=y.to(device))
    fc = RunStore.open(tmp_path / "r").layer("fc")
    assert fc.train_count.sum() == 5 * 8 and np.isfinite(fc.sum_true).all()
